//! The network config on stdin: the runtime's copy of our entry in the conflist, with the
//! list's `name` and `cniVersion` injected and, for ADD and CHECK, the previous plugin's
//! result as `prevResult`. Read by hand from a `Value` so each error names the key at fault.

use std::{path::PathBuf, time::Duration};

use serde_json::{Map, Value};

use crate::error::{CniError, code};

/// The CNI versions whose ADD/DEL/CHECK this plugin speaks. 0.4.0 is the first with CHECK
/// and with a cached result on DEL; older runtimes are long gone from Kubernetes.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["0.4.0", "1.0.0"];

/// How long one call to the daemon may take unless the config says otherwise. The runtime
/// waits for the whole plugin chain, so this must stay well below its own deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub socket: PathBuf,
    pub timeout: Duration,
    /// The previous plugin's result, kept as the JSON it was: we pass it on unchanged.
    pub prev_result: Option<Map<String, Value>>,
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                format!("the network config on stdin is not JSON: {e}"),
            )
        })?;
        let Value::Object(mut conf) = value else {
            return Err(invalid("the network config on stdin is not a JSON object"));
        };
        let cni_version = match conf.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            Some(other) => {
                return Err(invalid(format!(
                    "the network config's cniVersion is {other}, not a string"
                )));
            }
            None => return Err(invalid("the network config has no cniVersion")),
        };
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "tunnel-cni speaks CNI {}, not {cni_version} (the conflist's cniVersion)",
                    SUPPORTED_VERSIONS.join(" and ")
                ),
            ));
        }
        let socket = match conf.get("socket") {
            None | Some(Value::Null) => PathBuf::from(tunnel_pod_api::DEFAULT_SOCKET),
            Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
            Some(other) => {
                return Err(invalid(format!(
                    "tunnel-cni's \"socket\" is {other}; it must be the path of the tunnel \
                     daemon's pod API socket"
                )));
            }
        };
        let timeout = match conf.get("timeout_seconds") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(value) => match value.as_u64() {
                Some(seconds) if seconds > 0 => Duration::from_secs(seconds),
                _ => {
                    return Err(invalid(format!(
                        "tunnel-cni's \"timeout_seconds\" is {value}; it must be a whole \
                         number of seconds, at least 1"
                    )));
                }
            },
        };
        let prev_result = match conf.remove("prevResult") {
            None | Some(Value::Null) => None,
            Some(Value::Object(result)) => Some(result),
            Some(other) => {
                return Err(invalid(format!(
                    "the network config's prevResult is {}, not a result object",
                    kind(&other)
                )));
            }
        };
        Ok(Self {
            cni_version,
            socket,
            timeout,
            prev_result,
        })
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `cniVersion` of a config that may not parse, for the error result (the spec wants
/// the version the runtime asked for there, and this plugin's latest when it is unknown).
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<NetConf, CniError> {
        NetConf::parse(value.to_string().as_bytes())
    }

    #[test]
    fn defaults_apply_when_the_entry_only_names_the_type() {
        let conf =
            parse(json!({"cniVersion": "1.0.0", "name": "k8s", "type": "tunnel-cni"})).unwrap();
        assert_eq!(
            conf,
            NetConf {
                cni_version: "1.0.0".into(),
                socket: tunnel_pod_api::DEFAULT_SOCKET.into(),
                timeout: DEFAULT_TIMEOUT,
                prev_result: None,
            }
        );
    }

    #[test]
    fn socket_timeout_and_prev_result_are_read() {
        let conf = parse(json!({
            "cniVersion": "0.4.0", "name": "k8s", "type": "tunnel-cni",
            "socket": "/tmp/p.sock", "timeout_seconds": 3,
            "prevResult": {"cniVersion": "0.4.0", "ips": [{"address": "10.1.2.3/24"}]},
            "runtimeConfig": {"whatever": true},
        }))
        .unwrap();
        assert_eq!(conf.socket, PathBuf::from("/tmp/p.sock"));
        assert_eq!(conf.timeout, Duration::from_secs(3));
        assert_eq!(
            Value::Object(conf.prev_result.unwrap())["ips"][0]["address"],
            "10.1.2.3/24"
        );
    }

    #[test]
    fn wrong_values_are_named() {
        let cases = [
            (
                json!({"name": "k8s"}),
                code::INVALID_CONFIG,
                "no cniVersion",
            ),
            (
                json!({"cniVersion": "0.3.1"}),
                code::INCOMPATIBLE_VERSION,
                "not 0.3.1",
            ),
            (
                json!({"cniVersion": "1.0.0", "timeout_seconds": 0}),
                code::INVALID_CONFIG,
                "\"timeout_seconds\" is 0",
            ),
            (
                json!({"cniVersion": "1.0.0", "timeout_seconds": "10"}),
                code::INVALID_CONFIG,
                "\"timeout_seconds\" is \"10\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "socket": 5}),
                code::INVALID_CONFIG,
                "\"socket\" is 5",
            ),
            (
                json!({"cniVersion": "1.0.0", "prevResult": [1]}),
                code::INVALID_CONFIG,
                "prevResult is an array",
            ),
            (json!([1, 2]), code::INVALID_CONFIG, "not a JSON object"),
        ];
        for (config, expected_code, needle) in cases {
            let e = parse(config.clone()).unwrap_err();
            assert_eq!(e.code, expected_code, "{config}: {e}");
            assert!(e.msg.contains(needle), "{config}: {e}");
        }
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODE);
    }

    /// Found while writing a fuzz target for the plugin's stdin: the
    /// largest `timeout_seconds` reads, and the pod API client's deadline overflowed the
    /// clock with it, so ADD, DEL and CHECK panicked instead of calling the daemon.
    #[test]
    fn the_largest_timeout_reads_and_bounds_a_call() {
        let conf = parse(json!({"cniVersion": "1.0.0", "timeout_seconds": u64::MAX})).unwrap();
        assert_eq!(conf.timeout, Duration::from_secs(u64::MAX));
        let e = tunnel_pod_api::call(
            std::path::Path::new("/nonexistent/pods.sock"),
            &tunnel_pod_api::Request::Del { uid: "u".into() },
            conf.timeout,
        )
        .unwrap_err();
        assert!(
            matches!(e, tunnel_pod_api::ClientError::Connect { .. }),
            "{e}"
        );
    }

    /// Found by the `cni_stdin` fuzz target (its seed `float-in-prev-result`): a number in
    /// the previous plugin's result, `5e71`, read as a float off in its last digit
    /// (serde_json's fast float reading is not exact unless `float_roundtrip`), so ADD
    /// passed on another number than it was given, which read back as yet another.
    #[test]
    fn numbers_in_the_previous_result_pass_through_unchanged() {
        let stdin = br#"{"cniVersion": "1.0.0", "prevResult": {"interfaces": [{"mtu": 5e71}],
            "ips": [{"interface": 0, "weight": 0.1}]}}"#;
        let result = Value::Object(NetConf::parse(stdin).unwrap().prev_result.unwrap());
        assert_eq!(result["interfaces"][0]["mtu"].as_f64(), Some(5e71));
        assert_eq!(result["ips"][0]["weight"].as_f64(), Some(0.1));
        let written = result.to_string();
        assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), result);
    }

    #[test]
    fn the_error_version_is_the_configs_when_readable() {
        assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(version_of(b"garbage"), "1.0.0");
    }
}
