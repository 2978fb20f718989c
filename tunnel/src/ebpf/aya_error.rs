//! aya's errors under this crate's rule (see `errors`). aya mostly follows it, but a few of
//! its errors print their cause and also return it from `source()`, which would say the
//! cause twice in a printed chain.

use std::{error::Error, fmt};

use aya::{BtfError, programs::ProgramError};

/// An aya error, told under the rule: `EbpfError::{ParseError, BtfError, MapError,
/// ProgramError}` ("map error: {0}") are seen through to the error they wrap, and the chain
/// ends at `ProgramError::LoadError` and `BtfError::LoadError`, whose message already holds
/// their `io::Error` (and the verifier's log). Boxed: aya's errors are large, and this one
/// rides in `EbpfError` on every path that returns it.
#[derive(Debug)]
pub struct AyaError(Box<Aya>);

#[derive(Debug)]
enum Aya {
    Ebpf(aya::EbpfError),
    Program(ProgramError),
}

impl From<aya::EbpfError> for AyaError {
    fn from(error: aya::EbpfError) -> Self {
        Self(Box::new(Aya::Ebpf(error)))
    }
}

impl From<ProgramError> for AyaError {
    fn from(error: ProgramError) -> Self {
        Self(Box::new(Aya::Program(error)))
    }
}

impl AyaError {
    /// The error this one stands for.
    fn shown(&self) -> &(dyn Error + 'static) {
        match &*self.0 {
            Aya::Ebpf(aya::EbpfError::ParseError(e)) => e,
            Aya::Ebpf(aya::EbpfError::BtfError(e)) => e,
            Aya::Ebpf(aya::EbpfError::MapError(e)) => e,
            Aya::Ebpf(aya::EbpfError::ProgramError(e)) => e,
            Aya::Ebpf(e) => e,
            Aya::Program(e) => e,
        }
    }
}

impl fmt::Display for AyaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.shown())
    }
}

impl Error for AyaError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        let shown = self.shown();
        let holds_its_source = matches!(
            shown.downcast_ref::<ProgramError>(),
            Some(ProgramError::LoadError { .. })
        ) || matches!(
            shown.downcast_ref::<BtfError>(),
            Some(BtfError::LoadError { .. })
        );
        if holds_its_source {
            None
        } else {
            shown.source()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::maps::MapError;

    use super::*;
    use crate::errors;

    #[test]
    fn wrappers_that_repeat_their_cause_are_seen_through() {
        let error = AyaError::from(aya::EbpfError::MapError(MapError::CreateError {
            name: "CONFIG".into(),
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert_eq!(
            errors::chain(&error),
            "failed to create map `CONFIG`: Operation not permitted (os error 1)"
        );
    }
}
