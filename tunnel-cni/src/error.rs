//! The CNI error result: what the runtime shows when a pod cannot start (kubelet puts `msg` in
//! the pod's events), so `msg` says what was wrong in a sentence and `details` adds the rest.
//!
//! The other errors of this crate follow the daemon's rule (tunnel/src/errors.rs): a leaf says
//! everything in its message and has no `source()`; a wrapper's message names only its own
//! step and leaves the cause to `source()`. Printed with [`chain`], each fact appears once.

use std::error::Error;

use serde_json::{Value, json};

/// An error with its causes on one line, `outer: inner: innermost`.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Error codes from the CNI specification (0-99 are reserved for it) and our own (100+).
pub mod code {
    /// The network config asks for a CNI version this plugin does not speak.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A `CNI_*` environment variable (including `CNI_ARGS`) is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// stdin is not JSON.
    pub const DECODE: u32 = 6;
    /// The network config is JSON but wrong (missing `prevResult`, a bad `timeout_seconds`).
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient: the daemon is not there or did not answer in time. The runtime retries
    /// sandbox creation, and by then the daemon may be up.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The daemon answered and said no; its words are in the message.
    pub const DAEMON_REFUSED: u32 = 100;
    /// The daemon answered something that is not the answer to what we asked.
    pub const DAEMON_CONFUSED: u32 = 101;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// The JSON the spec wants on stdout; `cni_version` is the config's when it could be read.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut error = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if let Some(details) = &self.details {
            error["details"] = json!(details);
        }
        error
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (CNI error {})", self.msg, self.code)?;
        if let Some(details) = &self.details {
            write!(f, ": {details}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_left_out_when_there_are_none() {
        let plain = CniError::new(code::INVALID_CONFIG, "no prevResult");
        assert_eq!(
            plain.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "no prevResult"})
        );
        let detailed = plain.details("more");
        assert_eq!(detailed.to_json("0.4.0")["details"], "more");
        assert_eq!(detailed.to_json("0.4.0")["cniVersion"], "0.4.0");
    }

    #[test]
    fn each_link_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("failed to open {path}")]
        struct Open {
            path: &'static str,
            source: std::io::Error,
        }
        let error = Open {
            path: "/x",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(chain(&error), "failed to open /x: entity not found");
    }
}
