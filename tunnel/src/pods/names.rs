//! What a registration may name: Kubernetes names and uids, and an absolute namespace path.

use std::path::Path;

use tunnel_pod_api::PodSpec;

use super::PodError;

/// Kubernetes names (RFC 1123 labels and subdomains) and uids: nothing else is accepted, so
/// no registration can smuggle a path or a template placeholder into an identity or a file.
pub fn check_names(spec: &PodSpec) -> Result<(), PodError> {
    let dns = |what: &'static str, value: &str, max: usize| {
        let ok = !value.is_empty()
            && value.len() <= max
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !value.starts_with(['-', '.'])
            && !value.ends_with(['-', '.']);
        if ok {
            Ok(())
        } else {
            Err(PodError::NotAName {
                what,
                value: value.into(),
            })
        }
    };
    dns("namespace", &spec.namespace, 63)?;
    dns("pod name", &spec.name, 253)?;
    let uid_ok = !spec.uid.is_empty()
        && spec.uid.len() <= 128
        && spec
            .uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !uid_ok {
        return Err(PodError::NotAUid(spec.uid.clone()));
    }
    if !Path::new(&spec.netns).is_absolute() {
        return Err(PodError::RelativeNetns(spec.netns.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespace: &str, name: &str, uid: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            netns: "/var/run/netns/x".into(),
            spiffe_id: None,
        }
    }

    #[test]
    fn registrations_name_real_kubernetes_objects() {
        assert!(check_names(&spec("shop", "orders-7d9f.x", "6f1c2a9e-1b7e")).is_ok());
        for (bad, why) in [
            (spec("Shop", "a", "u"), "not a Kubernetes name"),
            (spec("shop", "a/../b", "u"), "not a Kubernetes name"),
            (spec("shop", "{namespace}", "u"), "not a Kubernetes name"),
            (spec("shop", "a", "../u"), "not a Kubernetes uid"),
            (spec("", "a", "u"), "not a Kubernetes name"),
        ] {
            let e = check_names(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let mut relative = spec("shop", "a", "u");
        relative.netns = "netns/x".into();
        assert!(
            check_names(&relative)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
    }
}
