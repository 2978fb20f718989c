//! `[[workload]]`: each workload's name, identity, certificate, cgroup (inside the captured
//! one) and ports, none shared with another workload or the daemon's own listeners.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use super::{Checker, KeyPath, at};
use crate::{
    config::{Capture, Listen, Located, Mode, Workload, raw::RawWorkload},
    identity::{SpiffeId, TrustDomain},
};

impl Checker<'_> {
    pub(super) fn workloads(
        &mut self,
        raw: &[RawWorkload],
        td: Option<&TrustDomain>,
        capture: Option<&Capture>,
        listen: Option<&Listen>,
        global_mode: Mode,
    ) -> Vec<Workload> {
        let mut workloads = Vec::new();
        let mut names = BTreeSet::new();
        let mut port_owner: BTreeMap<u16, String> = BTreeMap::new();
        let mut cgroup_owner: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut id_owner: BTreeMap<SpiffeId, String> = BTreeMap::new();
        let daemon_ports = listen.map(Listen::own_ports).unwrap_or_default();
        for (i, raw) in raw.iter().enumerate() {
            let path = at("workload").index(i);
            let name_ok = self.workload_name(&path.key("name"), &raw.name, &mut names);
            let spiffe_id = self.spiffe_id(&path.key("spiffe_id"), &raw.spiffe_id, td);
            // Peers tell callers apart by identity alone (policy, logs): two workloads with
            // one identity would be one caller to every peer.
            if let Some(id) = &spiffe_id
                && let Some(owner) = id_owner.get(id)
            {
                self.problem(
                    &path.key("spiffe_id"),
                    format!(
                        "workload {:?} has the same spiffe_id as workload {owner:?} ({id}); \
                         peers tell callers apart by identity, so each workload needs its own",
                        raw.name
                    ),
                );
            } else if let Some(id) = &spiffe_id {
                id_owner.insert(id.clone(), raw.name.clone());
            }
            let credential = self.cert_source(&path, raw.into());
            let cgroup = raw.cgroup.as_deref().map(|c| {
                self.workload_cgroup(
                    &path.key("cgroup"),
                    c,
                    &raw.name,
                    capture,
                    &mut cgroup_owner,
                )
            });
            let ports = self.ports(&path.key("ports"), &raw.ports);
            if let Some(ports) = &ports {
                for port in ports {
                    if daemon_ports.contains(port) {
                        self.problem(
                            &path.key("ports"),
                            format!("port {port} is one of the daemon's own listen ports"),
                        );
                    } else if let Some(owner) = port_owner.insert(*port, raw.name.clone()) {
                        self.problem(
                            &path.key("ports"),
                            format!("port {port} already belongs to workload {owner:?}"),
                        );
                    }
                }
            }
            if raw.cgroup.is_none() && raw.ports.is_empty() {
                self.problem(&path, format!("workload {:?} needs `cgroup` (to call out), `ports` (to be called), or both", raw.name));
            }
            let proxy_protocol = self.ports(&path.key("proxy_protocol"), &raw.proxy_protocol);
            let xfcc = self.ports(&path.key("xfcc"), &raw.xfcc);
            let mut outside = false;
            for (key, subset) in [("proxy_protocol", &proxy_protocol), ("xfcc", &xfcc)] {
                if let (Some(subset), Some(ports)) = (subset, &ports)
                    && let Some(port) = subset.difference(ports).next()
                {
                    self.problem(
                        &path.key(key),
                        format!("port {port} is not one of this workload's ports"),
                    );
                    outside = true;
                }
            }
            if outside {
                continue;
            }
            let Some(xfcc) = xfcc else { continue };
            let mut port_modes = std::collections::BTreeMap::new();
            for (text, mode) in &raw.port_modes {
                let key = path.key("port_modes").key(text);
                match text.parse::<u16>() {
                    Ok(port) if ports.as_ref().is_some_and(|p| p.contains(&port)) => {
                        port_modes.insert(port, *mode);
                    }
                    Ok(port) => {
                        self.problem(
                            &key,
                            format!("port {port} is not one of this workload's ports"),
                        );
                        outside = true;
                    }
                    Err(_) => {
                        self.problem(&key, format!("{text:?} is not a port number"));
                        outside = true;
                    }
                }
            }
            if outside {
                continue;
            }
            if let (true, Some(spiffe_id), Some(credential), Some(ports), Some(proxy_protocol)) =
                (name_ok, spiffe_id, credential, ports, proxy_protocol)
            {
                let cgroup = match cgroup {
                    Some(Some(c)) => Some(c),
                    Some(None) => continue,
                    None => None,
                };
                workloads.push(Workload {
                    name: raw.name.clone(),
                    spiffe_id,
                    credential,
                    cgroup,
                    ports,
                    mode: raw.mode.unwrap_or(global_mode),
                    proxy_protocol,
                    xfcc,
                    port_modes,
                });
            }
        }
        workloads
    }

    fn workload_name(&mut self, path: &KeyPath, name: &str, seen: &mut BTreeSet<String>) -> bool {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.problem(
                path,
                format!("{name:?} is not a valid name: use letters, digits, '-', '_' or '.'"),
            );
            return false;
        }
        if !seen.insert(name.to_string()) {
            self.problem(path, format!("workload {name:?} is defined twice"));
            return false;
        }
        true
    }

    fn workload_cgroup(
        &mut self,
        path: &KeyPath,
        text: &str,
        workload: &str,
        capture: Option<&Capture>,
        owners: &mut BTreeMap<PathBuf, String>,
    ) -> Option<Located<PathBuf>> {
        let cgroup = self.absolute_path(path, text)?;
        if let Some(capture) = capture
            && !cgroup.value.starts_with(&capture.cgroup.value)
        {
            self.problem(
                path,
                format!(
                    "{} is outside capture.cgroup {}, so this workload's calls would never be captured",
                    cgroup.value.display(),
                    capture.cgroup.value.display()
                ),
            );
            return None;
        }
        if let Some(owner) = owners.insert(cgroup.value.clone(), workload.to_string()) {
            self.problem(
                path,
                format!(
                    "{} is already the cgroup of workload {owner:?}",
                    cgroup.value.display()
                ),
            );
            return None;
        }
        Some(cgroup)
    }
}
