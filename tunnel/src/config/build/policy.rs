//! `[[policy]]` rules, in the config file or a policy file: the workload or pod identity
//! they protect, and the callers (identities, prefixes, CIDRs) and ports they match.

use std::str::FromStr;

use super::{Checker, KeyPath, at};
use crate::{
    config::{Policy, PrincipalPattern, Workload, raw::RawPolicy},
    identity::{SpiffeId, TrustDomain},
};

impl Checker<'_> {
    pub(super) fn policies(
        &mut self,
        raw: &[RawPolicy],
        td: Option<&TrustDomain>,
        workloads: &[Workload],
        pods: bool,
    ) -> Vec<Policy> {
        let mut policies = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let path = at("policy").index(i);
            let mut ok = true;
            if let Some(to) = &raw.to
                && !workloads.iter().any(|w| &w.name == to)
            {
                // A registered pod is named by its identity: every replica of a service
                // account is one destination.
                let pod_identity = pods && SpiffeId::from_str(to).is_ok();
                if !pod_identity {
                    let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
                    let pods_hint = if pods {
                        " or a pod identity (spiffe://...)"
                    } else {
                        ""
                    };
                    self.problem(
                        &path.key("to"),
                        format!(
                            "no workload named {to:?} (workloads: {}){pods_hint}",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            for (key, list) in [
                ("from", raw.from.as_ref().map(Vec::len)),
                ("from_ips", raw.from_ips.as_ref().map(Vec::len)),
                ("ports", raw.ports.as_ref().map(Vec::len)),
            ] {
                if list == Some(0) {
                    self.problem(
                        &path.key(key),
                        "an empty list matches nothing; remove the key to match any",
                    );
                    ok = false;
                }
            }
            let from = raw
                .from
                .as_ref()
                .map(|list| self.principal_patterns(&path.key("from"), list, td));
            let not_from = self.principal_patterns(&path.key("not_from"), &raw.not_from, td);
            let from_ips = raw
                .from_ips
                .as_ref()
                .map(|list| self.cidrs(&path.key("from_ips"), list));
            let not_from_ips = self.cidrs(&path.key("not_from_ips"), &raw.not_from_ips);
            let ports = raw
                .ports
                .as_ref()
                .map(|list| self.ports(&path.key("ports"), list));
            let not_ports = self.ports(&path.key("not_ports"), &raw.not_ports);
            let (Some(not_from), Some(not_from_ips), Some(not_ports)) =
                (not_from, not_from_ips, not_ports)
            else {
                continue;
            };
            let (Some(from), Some(from_ips), Some(ports)) = (
                from.map_or(Some(None), |f| f.map(Some)),
                from_ips.map_or(Some(None), |f| f.map(Some)),
                ports.map_or(Some(None), |p| p.map(Some)),
            ) else {
                continue;
            };
            if ok {
                policies.push(Policy {
                    action: raw.action,
                    to: raw.to.clone(),
                    from,
                    not_from,
                    from_ips,
                    not_from_ips,
                    ports,
                    not_ports,
                    dry_run: raw.dry_run,
                    site: self.site(&path),
                    file: None,
                });
            }
        }
        policies
    }

    /// Every pattern of a list, or `None` if one is wrong (each problem recorded).
    fn principal_patterns(
        &mut self,
        path: &KeyPath,
        texts: &[String],
        td: Option<&TrustDomain>,
    ) -> Option<Vec<PrincipalPattern>> {
        let patterns: Vec<Option<PrincipalPattern>> = texts
            .iter()
            .enumerate()
            .map(|(j, text)| self.principal_pattern(&path.index(j), text, td))
            .collect();
        patterns.into_iter().collect()
    }

    fn principal_pattern(
        &mut self,
        path: &KeyPath,
        text: &str,
        td: Option<&TrustDomain>,
    ) -> Option<PrincipalPattern> {
        if text == "*" {
            return Some(PrincipalPattern::Prefix(String::new()));
        }
        match text.find('*') {
            Some(star) if star + 1 != text.len() => {
                self.problem(
                    path,
                    format!("{text:?}: '*' is only allowed at the end (a prefix match)"),
                );
                None
            }
            Some(_) => {
                let prefix = &text[..text.len() - 1];
                let required = td.map(|td| format!("spiffe://{td}/"));
                if let Some(required) = required
                    && !prefix.starts_with(&required)
                {
                    self.problem(path, format!("{text:?}: a prefix must start with {required} (only trust domain {} is trusted)", td.map(ToString::to_string).unwrap_or_default()));
                    return None;
                }
                Some(PrincipalPattern::Prefix(prefix.to_string()))
            }
            None => self.spiffe_id(path, text, td).map(PrincipalPattern::Exact),
        }
    }
}
