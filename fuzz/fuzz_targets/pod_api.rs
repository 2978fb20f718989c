//! The pod registration API's messages (`tunnel-pod-api`) as the daemon reads a request line
//! (`pods/api`) and checks what an ADD may name (`pods::names`), and as the client reads the
//! daemon's answer.
//!
//! Input: one line, as a client would write it (a request) or the daemon would answer (a
//! response); both readings are tried.
//!
//! Checked:
//! 1. a request that reads is written back (serde_json) as a line that reads as the same
//!    request; a response likewise; the daemon's answer to a line it cannot read is a
//!    response that reads back;
//! 2. an ADD that passes the name checks names only Kubernetes objects: a namespace of at
//!    most 63 and a name of at most 253 bytes of lowercase letters, digits, '-' and '.', not
//!    starting or ending with '-' or '.'; a uid of at most 128 letters, digits and '-'; an
//!    absolute netns path. Such a pod's identity, from the Istio template and from one that
//!    uses every placeholder, is exactly the template filled in, in the trust domain: nothing
//!    in a registration reaches the identity's trust domain or adds a path segment;
//! 3. an ADD that fails them is refused with a message that names what was wrong.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tunnel::{
    identity::{IdTemplate, PodNames, TrustDomain},
    pods::names::check_names,
};
use tunnel_pod_api::{Request, Response};

fuzz_target!(|line: &[u8]| {
    match serde_json::from_slice::<Request>(line) {
        Ok(request) => {
            let written = serde_json::to_vec(&request).expect("a request writes");
            assert_eq!(
                serde_json::from_slice::<Request>(&written).ok(),
                Some(request.clone())
            );
            if let Request::Add(spec) = &request {
                match check_names(spec) {
                    Ok(()) => a_pod(&spec.namespace, &spec.name, &spec.uid, &spec.netns),
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
        }
        Err(e) => {
            let answer = Response::Error {
                error: format!("not a pod API request: {e}"),
            };
            let written = serde_json::to_vec(&answer).expect("a response writes");
            assert_eq!(
                serde_json::from_slice::<Response>(&written).ok(),
                Some(answer)
            );
        }
    }
    if let Ok(response) = serde_json::from_slice::<Response>(line) {
        let written = serde_json::to_vec(&response).expect("a response writes");
        assert_eq!(
            serde_json::from_slice::<Response>(&written).ok(),
            Some(response)
        );
    }
});

fn a_pod(namespace: &str, name: &str, uid: &str, netns: &PathBuf) {
    let dns = |value: &str, max: usize| {
        !value.is_empty()
            && value.len() <= max
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !value.starts_with(['-', '.'])
            && !value.ends_with(['-', '.'])
    };
    assert!(dns(namespace, 63), "namespace {namespace:?}");
    assert!(dns(name, 253), "name {name:?}");
    assert!(
        !uid.is_empty()
            && uid.len() <= 128
            && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "uid {uid:?}"
    );
    assert!(netns.is_absolute());

    let td: TrustDomain = "cluster.local".parse().unwrap();
    let names = PodNames {
        trust_domain: &td,
        namespace,
        name,
        service_account: Some("default"),
    };
    for (template, expected) in [
        (
            IdTemplate::ISTIO,
            format!("spiffe://cluster.local/ns/{namespace}/sa/default"),
        ),
        (
            "spiffe://{trust_domain}/ns/{namespace}/pod/{name}/sa/{service_account}",
            format!("spiffe://cluster.local/ns/{namespace}/pod/{name}/sa/default"),
        ),
    ] {
        let template = IdTemplate::parse(template, &td).unwrap();
        let id = template
            .render(&names)
            .unwrap_or_else(|e| panic!("pod {namespace}/{name} has no identity: {e}"));
        assert_eq!(id.to_string(), expected);
        assert!(id.is_in(&td));
    }
}
