//! Whose AES-GCM seals the tunnel's records, chosen per host at start.
//!
//! The record cipher is most of the data path's CPU (about 30% of both daemons' cycles in
//! a bulk transfer), and which library does it fastest depends on the CPU: on an AMD EPYC
//! without AVX-512, ring's VAES-AVX2 code seals about 1.8× faster than aws-lc; on an Intel
//! Xeon with AVX-512 they tie, or aws-lc leads on full records. So the daemon measures both
//! for a millisecond or two at start ([`measure`]) and takes the faster, unless the config
//! names one. The key exchange stays aws-lc's whatever is chosen here: only aws-lc has the
//! post-quantum hybrid (X25519MLKEM768). A FIPS build (`--features fips`) has only aws-lc.

use std::{
    fmt,
    sync::OnceLock,
    time::{Duration, Instant},
};

/// A library that provides the record cipher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AeadImplementation {
    AwsLc,
    #[cfg(feature = "ring-aead")]
    Ring,
}

impl fmt::Display for AeadImplementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AwsLc => "aws-lc",
            #[cfg(feature = "ring-aead")]
            Self::Ring => "ring",
        })
    }
}

/// What was chosen, and why.
#[derive(Clone, Debug)]
pub struct AeadChoice {
    pub implementation: AeadImplementation,
    pub reason: ChoiceReason,
}

#[derive(Clone, Debug)]
pub enum ChoiceReason {
    /// The config named it.
    Configured,
    /// The build has no other (a FIPS build, or one without the `ring-aead` feature).
    OnlyOne,
    /// Measured at start: bytes sealed per second by each candidate.
    Measured(Vec<(AeadImplementation, f64)>),
}

impl fmt::Display for AeadChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.implementation)?;
        match &self.reason {
            ChoiceReason::Configured => write!(f, " (configured)"),
            ChoiceReason::OnlyOne => write!(f, " (the only one in this build)"),
            ChoiceReason::Measured(rates) => {
                write!(f, " (measured at start:")?;
                for (implementation, rate) in rates {
                    write!(f, " {implementation} {:.2} GB/s", rate / 1e9)?;
                }
                write!(f, ")")
            }
        }
    }
}

/// A candidate must seal this much faster than aws-lc to be chosen: aws-lc is the
/// default, and a difference smaller than the self-test's noise is not worth a second
/// library on the data path.
const MARGIN: f64 = 1.10;

static CHOSEN: OnceLock<AeadChoice> = OnceLock::new();

/// Chooses the record cipher for this process: `forced`, or the faster by measurement.
/// Later calls return the first choice. The provider reads it once, when it is built:
/// choose through `provider::choose_record_cipher`, which says when that was too late.
pub(super) fn choose(forced: Option<AeadImplementation>) -> &'static AeadChoice {
    CHOSEN.get_or_init(|| match forced {
        Some(implementation) => AeadChoice {
            implementation,
            reason: ChoiceReason::Configured,
        },
        None => by_measurement(),
    })
}

/// Seals one full record with `implementation`: its code's first run, done at start.
pub(super) fn seal_one_record(implementation: AeadImplementation) {
    let mut record = vec![0_u8; RECORD];
    match implementation {
        AeadImplementation::AwsLc => aws_lc_sealer()(&mut record),
        #[cfg(feature = "ring-aead")]
        AeadImplementation::Ring => ring_sealer()(&mut record),
    }
}

/// The choice made, or aws-lc for a process that never chose (the command line's tools).
pub(super) fn chosen() -> AeadImplementation {
    CHOSEN
        .get()
        .map_or(AeadImplementation::AwsLc, |c| c.implementation)
}

#[cfg(not(feature = "ring-aead"))]
fn by_measurement() -> AeadChoice {
    AeadChoice {
        implementation: AeadImplementation::AwsLc,
        reason: ChoiceReason::OnlyOne,
    }
}

#[cfg(feature = "ring-aead")]
fn by_measurement() -> AeadChoice {
    let rates = measure(Duration::from_micros(300), 3);
    let aws_lc = rate_of(&rates, AeadImplementation::AwsLc);
    let ring = rate_of(&rates, AeadImplementation::Ring);
    let implementation = if ring > aws_lc * MARGIN {
        AeadImplementation::Ring
    } else {
        AeadImplementation::AwsLc
    };
    AeadChoice {
        implementation,
        reason: ChoiceReason::Measured(rates),
    }
}

#[cfg(feature = "ring-aead")]
fn rate_of(rates: &[(AeadImplementation, f64)], which: AeadImplementation) -> f64 {
    rates
        .iter()
        .find(|(i, _)| *i == which)
        .map_or(0.0, |(_, r)| *r)
}

/// The size of a full TLS record's payload, which bulk transfers seal.
const RECORD: usize = 16 * 1024;

/// Each candidate's best rate (bytes sealed per second, AES-128-GCM, full records) over
/// `rounds` rounds of `each` time, the candidates taking turns so that a burst of load from
/// elsewhere falls on all of them.
pub fn measure(each: Duration, rounds: usize) -> Vec<(AeadImplementation, f64)> {
    let mut candidates: Vec<(AeadImplementation, Sealer, f64)> =
        vec![(AeadImplementation::AwsLc, Box::new(aws_lc_sealer()), 0.0)];
    #[cfg(feature = "ring-aead")]
    candidates.push((AeadImplementation::Ring, Box::new(ring_sealer()), 0.0));
    let mut record = vec![0x5a_u8; RECORD];
    for _ in 0..rounds {
        for (_, seal, best) in &mut candidates {
            let started = Instant::now();
            let mut sealed = 0usize;
            while started.elapsed() < each {
                seal(&mut record);
                sealed += RECORD;
            }
            *best = best.max(sealed as f64 / started.elapsed().as_secs_f64());
        }
    }
    candidates
        .into_iter()
        .map(|(i, _, best)| (i, best))
        .collect()
}

/// Seals one record in place, for the self-test.
type Sealer = Box<dyn FnMut(&mut [u8])>;

/// A throwaway key and nonce: only the time is kept, never the output.
const KEY: [u8; 16] = [0x42; 16];
const NONCE: [u8; 12] = [0x24; 12];

fn aws_lc_sealer() -> impl FnMut(&mut [u8]) {
    use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).expect("a 16-byte key"));
    move |record| {
        let nonce = Nonce::assume_unique_for_key(NONCE);
        let tag = key.seal_in_place_separate_tag(nonce, Aad::empty(), record);
        std::hint::black_box(tag.ok());
    }
}

#[cfg(feature = "ring-aead")]
fn ring_sealer() -> impl FnMut(&mut [u8]) {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).expect("a 16-byte key"));
    move |record| {
        let nonce = Nonce::assume_unique_for_key(NONCE);
        let tag = key.seal_in_place_separate_tag(nonce, Aad::empty(), record);
        std::hint::black_box(tag.ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_of_the_build_is_measured_and_seals_something() {
        let rates = measure(Duration::from_micros(200), 1);
        let expected = if cfg!(feature = "ring-aead") { 2 } else { 1 };
        assert_eq!(rates.len(), expected, "{rates:?}");
        assert!(rates.iter().all(|(_, rate)| *rate > 0.0), "{rates:?}");
    }

    #[test]
    fn a_choice_says_what_was_measured() {
        let choice = AeadChoice {
            implementation: AeadImplementation::AwsLc,
            reason: ChoiceReason::Measured(vec![(AeadImplementation::AwsLc, 4.2e9)]),
        };
        assert_eq!(
            choice.to_string(),
            "aws-lc (measured at start: aws-lc 4.20 GB/s)"
        );
    }
}
