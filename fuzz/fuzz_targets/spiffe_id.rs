//! SPIFFE IDs, trust domains, ID patterns (`[outbound] peer_identity`) and pod identity
//! templates (`[pods] spiffe_id`), as `identity` reads them.
//!
//! Input, cut at NUL bytes: an ID, a trust domain, a pattern, a template, then a pod's
//! namespace, name and service account.
//!
//! Checked:
//! 1. an ID that parses displays back as the same text, parses again to the same ID, and is
//!    within the specification's limits (2048 bytes; a trust domain of at most 255 bytes of
//!    lowercase letters, digits, '.', '-', '_'; a path of non-empty segments, not '.' or '..',
//!    of letters, digits, '.', '-', '_'); its trust domain is read back from `spiffe://<td>`;
//! 2. a trust domain that parses displays back as the same text;
//! 3. a pattern that parses displays back as the same text and matches only IDs of its trust
//!    domain (a prefix one: exactly the IDs whose text starts with the prefix);
//! 4. a template that parses renders, for every pod the pod API lets through (Kubernetes
//!    names and uids, checked by `pods::names`), an identity of its trust domain: the
//!    template with each placeholder replaced once by the pod's value. Templates are tried
//!    with the trust domain given and with the one their sample rendering names.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tunnel::{
    identity::{IdPattern, IdTemplate, PodNames, SpiffeId, TrustDomain},
    pods::names::check_names,
};
use tunnel_fuzz::parts;
use tunnel_pod_api::PodSpec;

fuzz_target!(|data: &[u8]| {
    let texts: Vec<&str> = parts(data, 7)
        .into_iter()
        .map(|p| std::str::from_utf8(p).unwrap_or(""))
        .collect();
    let [
        id_text,
        td_text,
        pattern_text,
        template_text,
        namespace,
        name,
        service_account,
    ] = texts[..]
    else {
        unreachable!()
    };

    let id = id_text.parse::<SpiffeId>();
    match &id {
        Ok(id) => an_id(id_text, id),
        Err(e) => {
            assert_eq!(e.input, id_text);
            assert!(!e.reason.is_empty());
        }
    }

    let td = match td_text.parse::<TrustDomain>() {
        Ok(td) => {
            assert_eq!(td.to_string(), td_text);
            assert!(td_text.len() <= 255 && td_text.bytes().all(domain_byte));
            td
        }
        Err(_) => {
            assert!(
                td_text.is_empty() || td_text.len() > 255 || !td_text.bytes().all(domain_byte),
                "{td_text:?} refused"
            );
            match &id {
                Ok(id) => id.trust_domain().clone(),
                Err(_) => return,
            }
        }
    };

    if let Ok(pattern) = IdPattern::parse(pattern_text, &td) {
        assert_eq!(pattern.to_string(), pattern_text);
        let root = format!("spiffe://{td}/");
        match &pattern {
            IdPattern::Exact(exact) => assert!(exact.is_in(&td)),
            IdPattern::Prefix(prefix) => assert!(prefix.starts_with(&root), "{prefix}"),
        }
        let candidates = [
            id.as_ref().ok().cloned(),
            format!("{}x", pattern_text.trim_end_matches('*'))
                .parse()
                .ok(),
        ];
        for candidate in candidates.into_iter().flatten() {
            let matches = pattern.matches(&candidate);
            if matches {
                assert!(candidate.is_in(&td), "{pattern} matches {candidate}");
            }
            if let IdPattern::Prefix(prefix) = &pattern {
                assert_eq!(matches, candidate.to_string().starts_with(prefix.as_str()));
            }
        }
    }

    // A template is judged against the trust domain given, and against the one its own
    // sample rendering names (the one it is accepted for, if any), so that the accepting
    // path runs for most templates, not only for those of the given domain.
    let sample = PodNames {
        trust_domain: &td,
        namespace: "default",
        name: "pod",
        service_account: Some("default"),
    };
    let implied = substitute(template_text, &sample)
        .and_then(|text| text.parse::<SpiffeId>().ok())
        .map(|id| id.trust_domain().clone());
    for td in std::iter::once(td.clone()).chain(implied.filter(|t| *t != td)) {
        let Ok(template) = IdTemplate::parse(template_text, &td) else {
            continue;
        };
        assert_eq!(template.to_string(), template_text);
        let spec = PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: "6f1c2a9e-1b7e".into(),
            netns: PathBuf::from("/var/run/netns/x"),
            spiffe_id: None,
        };
        // The service account comes from the Kubernetes API: a DNS subdomain like a name.
        let account = PodSpec {
            name: service_account.into(),
            ..spec.clone()
        };
        if check_names(&spec).is_err() || check_names(&account).is_err() {
            continue;
        }
        let names = PodNames {
            trust_domain: &td,
            namespace,
            name,
            service_account: Some(service_account),
        };
        let expected = substitute(template_text, &names).expect("a parsed template");
        match template.render(&names) {
            Ok(rendered) => {
                assert_eq!(rendered.to_string(), expected);
                assert!(
                    rendered.is_in(&td),
                    "{template_text:?} accepted for {td}, gives {rendered} for pod \
                     {namespace}/{name}"
                );
            }
            Err(_) => assert!(expected.parse::<SpiffeId>().is_err(), "{expected}"),
        }
    }
});

fn domain_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

fn an_id(text: &str, id: &SpiffeId) {
    assert_eq!(id.to_string(), text);
    assert_eq!(text.parse::<SpiffeId>().as_ref(), Ok(id));
    assert!(text.len() <= 2048);
    let td = id.trust_domain().to_string();
    assert!(
        !td.is_empty() && td.len() <= 255 && td.bytes().all(domain_byte),
        "{td:?}"
    );
    assert_eq!(
        TrustDomain::from_spiffe_uri(&format!("spiffe://{td}")).as_ref(),
        Ok(id.trust_domain())
    );
    assert_eq!(format!("spiffe://{td}{}", id.path()), text);
    let path = id.path().strip_prefix('/').expect("a path starts with /");
    for segment in path.split('/') {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{text:?}"
        );
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
            "{text:?}"
        );
    }
}

/// The template with each `{placeholder}` replaced once, left to right; `None` for one with
/// an unknown placeholder or a '{' without its '}'.
fn substitute(template: &str, names: &PodNames<'_>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}')?;
        out.push_str(&match &rest[open + 1..close] {
            "trust_domain" => names.trust_domain.to_string(),
            "namespace" => names.namespace.into(),
            "name" => names.name.into(),
            "service_account" => names.service_account.unwrap_or_default().into(),
            _ => return None,
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}
