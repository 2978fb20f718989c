//! The network config the container runtime gives tunnel-cni on stdin (`config::NetConf`),
//! and the error result the plugin answers with when it is refused.
//!
//! Input: stdin, as the runtime writes it.
//!
//! Checked:
//! 1. a config that reads speaks a supported CNI version (the one the error result would
//!    name too), has a socket path and a timeout of at least a second, and that timeout can
//!    bound a call to the daemon: the pod API's client is run with it (against a socket that
//!    does not exist) as ADD, DEL and CHECK run it;
//! 2. ADD's result (the previous plugin's, with our CNI version) writes out as JSON that
//!    reads back as the same object;
//! 3. a config that does not read gives an error result that is a CNI error object (the
//!    version the runtime asked for when it can be read, a code, a message) and writes out
//!    as JSON that reads back the same.
#![no_main]

use std::{path::Path, time::Duration};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tunnel_cni::{
    config::{NetConf, SUPPORTED_VERSIONS, version_of},
    error::code,
};
use tunnel_pod_api::{ClientError, Request};

/// No such socket: the client fails at connect, after computing its deadline.
const NO_DAEMON: &str = "/proc/self/fdinfo/no-such-dir/pods.sock";

fuzz_target!(|stdin: &[u8]| {
    match NetConf::parse(stdin) {
        Ok(conf) => {
            assert!(SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()));
            assert_eq!(version_of(stdin), conf.cni_version);
            assert!(!conf.socket.as_os_str().is_empty());
            assert!(conf.timeout >= Duration::from_secs(1));
            let request = Request::Check { uid: "u".into() };
            match tunnel_pod_api::call(Path::new(NO_DAEMON), &request, conf.timeout) {
                Err(ClientError::Connect { .. }) => {}
                other => panic!("a call to no daemon gave {other:?}"),
            }
            if let Some(previous) = &conf.prev_result {
                let mut result = previous.clone();
                result.insert("cniVersion".into(), Value::from(conf.cni_version.clone()));
                let result = Value::Object(result);
                let written = result.to_string();
                assert_eq!(serde_json::from_str::<Value>(&written).ok(), Some(result));
            }
        }
        Err(e) => {
            assert!(
                [
                    code::INCOMPATIBLE_VERSION,
                    code::DECODE,
                    code::INVALID_CONFIG
                ]
                .contains(&e.code),
                "{e}"
            );
            assert!(!e.msg.is_empty());
            let version = version_of(stdin);
            let result = e.to_json(&version);
            assert_eq!(result["cniVersion"], Value::from(version));
            assert_eq!(result["code"], Value::from(e.code));
            assert_eq!(result["msg"], Value::from(e.msg.clone()));
            let written = result.to_string();
            assert_eq!(serde_json::from_str::<Value>(&written).ok(), Some(result));
        }
    }
});
