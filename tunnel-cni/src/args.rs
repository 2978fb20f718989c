//! `CNI_ARGS`: `K=V` pairs separated by semicolons. Kubernetes runtimes put the pod's identity
//! there (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`, with `IgnoreUnknown=1` so
//! plugins that know none of it do not fail); nothing else in it concerns us.

use crate::error::{CniError, code};

/// The pairs of `CNI_ARGS`, in order, with the ones that are not `K=V` set aside: ADD refuses
/// them, DEL must not (it has to tolerate whatever state it is given).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    malformed: Vec<String>,
}

/// The pod a runtime is setting up, from `CNI_ARGS`.
#[derive(Debug, PartialEq, Eq)]
pub struct K8sPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

const NAMESPACE: &str = "K8S_POD_NAMESPACE";
const NAME: &str = "K8S_POD_NAME";
const UID: &str = "K8S_POD_UID";

impl CniArgs {
    pub fn parse(text: &str) -> Self {
        let mut args = Self::default();
        for pair in text.split(';').filter(|p| !p.trim().is_empty()) {
            // The value may itself contain '=': only the first one separates.
            match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => args
                    .pairs
                    .push((key.trim().to_owned(), value.trim().to_owned())),
                _ => args.malformed.push(pair.to_owned()),
            }
        }
        args
    }

    /// The value of `key`; an empty value counts as absent (a runtime that does not know the
    /// pod's uid may still write `K8S_POD_UID=`). The last occurrence wins, as in libcni.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The pod's uid, if the runtime gave it (DEL and CHECK need nothing else).
    pub fn uid(&self) -> Option<&str> {
        self.get(UID)
    }

    /// The whole pod, for ADD. Every missing key is named: a pod that the daemon cannot
    /// protect must not start, and whoever reads the pod's events should see why.
    pub fn k8s_pod(&self) -> Result<K8sPod, CniError> {
        if let Some(pair) = self.malformed.first() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS has {pair:?}, which is not KEY=VALUE"),
            ));
        }
        let missing: Vec<&str> = [NAMESPACE, NAME, UID]
            .into_iter()
            .filter(|key| self.get(key).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_ARGS has no {}: tunnel-cni registers Kubernetes pods and needs the \
                     pod's namespace, name and uid there (the container runtime's CRI plugin \
                     sets them)",
                    missing.join(", ")
                ),
            ));
        }
        let value = |key| self.get(key).unwrap_or_default().to_owned();
        Ok(K8sPod {
            namespace: value(NAMESPACE),
            name: value(NAME),
            uid: value(UID),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_runtimes_args_give_the_pod() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-7d9;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b7c-11ee",
        );
        assert_eq!(
            args.k8s_pod().unwrap(),
            K8sPod {
                namespace: "shop".into(),
                name: "cart-7d9".into(),
                uid: "0b7c-11ee".into()
            }
        );
        assert_eq!(args.get("IgnoreUnknown"), Some("1"));
    }

    #[test]
    fn values_may_contain_equals_signs_and_whitespace_around_pairs_is_ignored() {
        let args = CniArgs::parse(" A=b=c ; K8S_POD_UID = u1 ;;");
        assert_eq!(args.get("A"), Some("b=c"));
        assert_eq!(args.uid(), Some("u1"));
    }

    #[test]
    fn every_missing_key_is_named() {
        let e = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_UID=")
            .k8s_pod()
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(
            e.msg.contains("no K8S_POD_NAMESPACE, K8S_POD_UID:"),
            "{}",
            e.msg
        );
        let e = CniArgs::parse("").k8s_pod().unwrap_err();
        assert!(
            e.msg
                .contains("K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn a_pair_without_equals_fails_add_but_not_the_uid_lookup() {
        let args = CniArgs::parse("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_UID=c;oops");
        let e = args.k8s_pod().unwrap_err();
        assert!(e.msg.contains("\"oops\""), "{}", e.msg);
        assert_eq!(args.uid(), Some("c"));
    }

    #[test]
    fn the_last_occurrence_wins() {
        assert_eq!(
            CniArgs::parse("K8S_POD_UID=a;K8S_POD_UID=b").uid(),
            Some("b")
        );
    }
}
