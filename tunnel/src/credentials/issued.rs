//! Certificates the daemon issues itself (`issuer` + `ttl`): the key is made in memory, the
//! certificate signed by the configured intermediate, and renewed at half its lifetime (with
//! jitter, so many daemons started together do not renew together). A failed renewal keeps
//! the certificate in force and is retried with backoff.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;
use tracing::{error, warn};

use super::{Credentials, CredentialsError, InForce, judge::judge, log_replaced};
use crate::{
    ca::{Ca, LeafSpec},
    errors,
    identity::{SpiffeId, TrustDomain, timestamp},
    tls::{Credential, provider},
};

/// Backoff of a failed renewal: doubles from one second, at most a minute.
const RENEW_RETRY_MAX: Duration = Duration::from_secs(60);

/// An issuer as the daemon holds it (also used by `tunnel check` to issue as the daemon
/// would).
pub(crate) struct IssuerState {
    dir: PathBuf,
    ttl: Duration,
    ca: Ca,
    /// Whose certificates it issues, when its own certificate does not say.
    trust_domain: TrustDomain,
    /// When the certificate in force should be replaced.
    renew_at: Instant,
    /// Renewals failed in a row (for the backoff).
    failures: u32,
}

impl IssuerState {
    /// The issuer in `dir`, signing for `trust_domain` if its certificate names none.
    pub fn load(
        dir: &Path,
        ttl: Duration,
        trust_domain: &TrustDomain,
    ) -> Result<Self, CredentialsError> {
        Ok(Self {
            dir: dir.into(),
            ttl,
            ca: load_ca(dir, trust_domain)?,
            trust_domain: trust_domain.clone(),
            renew_at: Instant::now(),
            failures: 0,
        })
    }

    /// Reads the issuer's files again (a CA rotation: leaves come from the new CA at once).
    pub fn reload(&mut self) -> Result<(), CredentialsError> {
        self.ca = load_ca(&self.dir, &self.trust_domain)?;
        Ok(())
    }

    /// A new certificate for `id`, valid for the TTL (or until the issuer expires, if that
    /// is sooner), and the time to renew it.
    pub fn issue(&mut self, id: &SpiffeId) -> Result<Credential, CredentialsError> {
        let mut spec = LeafSpec::workload(id, self.ttl);
        let now = time::OffsetDateTime::now_utc();
        // Backdated a little for peers whose clock is behind, but never by more than a
        // quarter of the TTL: the expiry warning (at 2/3 of the lifetime) must stay after the
        // renewal (at 1/2 of the TTL).
        spec.not_before = now - (self.ttl / 4).min(Duration::from_secs(300));
        if spec.not_after > self.ca.not_after {
            warn!(
                issuer = %self.dir.display(), issuer_expiry = %timestamp(self.ca.not_after.unix_timestamp()),
                "the issuer expires before a full TTL: the certificate is cut to the issuer's expiry; rotate the issuer"
            );
            spec.not_after = self.ca.not_after;
        }
        let issued = self
            .ca
            .issue_in_memory(&spec)
            .map_err(|source| CredentialsError::Issue {
                dir: self.dir.clone(),
                source,
            })?;
        let credential = Credential::issued(issued.chain, issued.key)
            .map_err(|source| CredentialsError::Unusable { source })?;
        let lifetime = (spec.not_after - now).unsigned_abs();
        self.renew_at = Instant::now() + renewal_delay(lifetime);
        self.failures = 0;
        Ok(credential)
    }

    /// After a failed renewal: 1 s, 2 s, 4 s... at most a minute.
    fn back_off(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = Duration::from_secs(1u64 << self.failures.min(6).saturating_sub(1));
        let delay = delay.min(RENEW_RETRY_MAX);
        self.renew_at = Instant::now() + delay;
        delay
    }
}

fn load_ca(dir: &Path, trust_domain: &TrustDomain) -> Result<Ca, CredentialsError> {
    Ca::load_for(dir, Some(trust_domain)).map_err(|source| CredentialsError::LoadIssuer {
        dir: dir.into(),
        source,
    })
}

/// Half the lifetime, ± a tenth of it.
fn renewal_delay(lifetime: Duration) -> Duration {
    let mut random = [0u8; 4];
    let _ = provider().secure_random.fill(&mut random);
    let unit = f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX); // 0..=1
    lifetime.mul_f64(0.4 + 0.2 * unit)
}

impl Credentials {
    /// Renews every issued certificate when it is due, until the daemon stops.
    pub async fn renew_forever(self: Arc<Self>) {
        loop {
            let next = {
                let state = self.state.lock().expect("credentials lock poisoned");
                state
                    .sources
                    .iter()
                    .filter_map(|s| s.issuer.as_ref().map(|i| i.renew_at))
                    .min()
            };
            let Some(next) = next else {
                // Nothing issued yet: wait for a pod (or a reload) to add a schedule.
                self.renewals_changed.notified().await;
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.renewals_changed.notified() => continue,
            }
            self.renew_due();
        }
    }

    /// Issues a new certificate for every source whose renewal is due, and publishes them.
    fn renew_due(&self) {
        let mut state = self.state.lock().expect("credentials lock poisoned");
        let old = self.current();
        let mut next = InForce::of(&old);
        let mut renewed = 0;
        let now = Instant::now();
        for source in &mut state.sources {
            let Some(issuer) = source.issuer.as_mut().filter(|i| i.renew_at <= now) else {
                continue;
            };
            let current = next.get_mut(&source.owner);
            let issued = issuer.issue(&source.id).and_then(|c| {
                judge(&c, &source.id, source.roles, &old.trust, &self.spec).map(|()| c)
            });
            match issued {
                Ok(credential) => {
                    log_replaced(&source.owner, current, &credential, "renewal");
                    *current = Arc::new(credential);
                    renewed += 1;
                    self.count_reload(true);
                }
                Err(e) => {
                    self.count_reload(false);
                    let retry = issuer.back_off();
                    error!(
                        owner = %source.owner, issuer = %issuer.dir.display(), retry_in = ?retry,
                        not_after = %timestamp(current.leaf.not_after),
                        "certificate renewal failed, the certificate in force stays: {}",
                        errors::chain(&e)
                    );
                }
            }
        }
        if renewed > 0 {
            // Under the lock, as every publisher does, so concurrent changes are not lost.
            self.publish(old.trust.clone(), next, "renewal");
        }
        drop(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_between_two_fifths_and_three_fifths_of_the_lifetime() {
        let lifetime = Duration::from_secs(100);
        for _ in 0..1000 {
            let delay = renewal_delay(lifetime);
            assert!(
                delay >= Duration::from_secs(40) && delay <= Duration::from_secs(60),
                "{delay:?}"
            );
        }
    }
}
