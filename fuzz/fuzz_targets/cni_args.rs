//! `CNI_ARGS` as tunnel-cni reads it (`args::CniArgs`): `K=V` pairs separated by ';', and the
//! pod ADD registers from them.
//!
//! Input: the variable's value (bytes that are not UTF-8 are replaced, as the plugin's
//! lossy reading of its environment does).
//!
//! Checked:
//! 1. reading is idempotent: the pairs written back as `K=V;...` (with what was not a pair
//!    as it was) read as the same arguments;
//! 2. a value read for a key is the last one given, non-empty, without surrounding
//!    whitespace, never holding a ';';
//! 3. ADD's pod is the three keys' values, and fails (code 4, "invalid environment") exactly
//!    when one is missing or something is not a pair; the request it sends writes as JSON
//!    that reads back the same; the daemon's name checks either pass it or say why.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tunnel::pods::names::check_names;
use tunnel_cni::{args::CniArgs, error::code};
use tunnel_pod_api::{PodSpec, Request};

const KEYS: [&str; 3] = ["K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args = CniArgs::parse(&text);

    // The pairs as `split(';')` finds them, to write back and to look up.
    let mut pairs = Vec::new();
    let mut others = Vec::new();
    for piece in text.split(';').filter(|p| !p.trim().is_empty()) {
        match piece.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => pairs.push((k.trim(), v.trim())),
            _ => others.push(piece),
        }
    }
    let written: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(others.iter().map(|p| p.to_string()))
        .collect();
    assert_eq!(CniArgs::parse(&written.join(";")), args, "{written:?}");

    for key in KEYS.iter().copied().chain(pairs.iter().map(|(k, _)| *k)) {
        let last = pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let got = args.get(key);
        assert_eq!(got, last.filter(|v| !v.is_empty()), "{key}");
        if let Some(value) = got {
            assert_eq!(value, value.trim());
            assert!(!value.contains(';'));
        }
    }
    assert_eq!(args.uid(), args.get("K8S_POD_UID"));

    match args.k8s_pod() {
        Ok(pod) => {
            assert!(others.is_empty());
            assert_eq!(
                [pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()],
                KEYS.map(|k| args.get(k).expect("a key ADD needs"))
            );
            let request = Request::Add(PodSpec {
                namespace: pod.namespace,
                name: pod.name,
                uid: pod.uid,
                netns: PathBuf::from("/var/run/netns/cni-1"),
                spiffe_id: None,
            });
            let line = serde_json::to_vec(&request).expect("a request writes");
            let read: Request = serde_json::from_slice(&line).expect("and reads back");
            assert_eq!(read, request);
            let Request::Add(spec) = &read else {
                unreachable!()
            };
            if let Err(e) = check_names(spec) {
                assert!(!e.to_string().is_empty());
            }
        }
        Err(e) => {
            assert_eq!(e.code, code::INVALID_ENV);
            assert!(!others.is_empty() || KEYS.iter().any(|k| args.get(k).is_none()));
        }
    }
});
