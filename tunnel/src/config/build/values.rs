//! The value parsers of the config builder: each turns one field's text into a typed value,
//! or records a problem naming the key.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;

use super::{Checker, KeyPath};
use crate::{
    config::Located,
    duration,
    identity::{IdPattern, SpiffeId, TrustDomain},
};

impl Checker<'_> {
    pub(super) fn spiffe_id(
        &mut self,
        path: &KeyPath,
        text: &str,
        td: Option<&TrustDomain>,
    ) -> Option<SpiffeId> {
        let id = match SpiffeId::from_str(text) {
            Ok(id) => id,
            Err(e) => {
                self.problem(path, e.to_string());
                return None;
            }
        };
        if let Some(td) = td
            && !id.is_in(td)
        {
            self.problem(
                path,
                format!("{id} is outside the trust domain {td}; only {td} identities are trusted"),
            );
            return None;
        }
        Some(id)
    }

    /// `[outbound] peer_identity`: an ID or ID prefix inside the trust domain; the trust
    /// domain's nodes unless set. `None` without a trust domain (reported already).
    pub(super) fn peer_identity(
        &mut self,
        path: &KeyPath,
        text: Option<&str>,
        td: Option<&TrustDomain>,
    ) -> Option<IdPattern> {
        let td = td?;
        let Some(text) = text else {
            return Some(IdPattern::nodes_of(td));
        };
        match IdPattern::parse(text, td) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                self.problem(path, format!("{text:?}: {}", e.reason));
                None
            }
        }
    }

    pub(super) fn file_path(&mut self, path: &KeyPath, text: &str) -> Option<Located<PathBuf>> {
        if text.is_empty() {
            self.problem(path, "the path is empty");
            return None;
        }
        Some(Located {
            value: self.base.join(text),
            site: self.site(path),
        })
    }

    pub(super) fn absolute_path(&mut self, path: &KeyPath, text: &str) -> Option<Located<PathBuf>> {
        if !Path::new(text).is_absolute() {
            self.problem(path, format!("{text:?} must be an absolute path"));
            return None;
        }
        Some(Located {
            value: PathBuf::from(text),
            site: self.site(path),
        })
    }

    pub(super) fn socket_addr(&mut self, path: &KeyPath, text: &str) -> Option<SocketAddr> {
        match SocketAddr::from_str(text) {
            Ok(addr) if addr.port() == 0 => {
                self.problem(path, format!("{text:?}: port 0 is not a port"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(path, format!("{text:?} is not an address with a port (e.g. 127.0.0.1:15001 or [::1]:15001)"));
                None
            }
        }
    }

    pub(super) fn cidrs(&mut self, path: &KeyPath, texts: &[String]) -> Option<Vec<IpNet>> {
        let nets: Vec<Option<IpNet>> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| self.cidr(&path.index(i), text))
            .collect();
        nets.into_iter().collect()
    }

    pub(super) fn cidr(&mut self, path: &KeyPath, text: &str) -> Option<IpNet> {
        // A bare address is a single host.
        if let Ok(ip) = IpAddr::from_str(text) {
            return Some(IpNet::from(ip));
        }
        match IpNet::from_str(text) {
            Ok(net) if net.trunc() != net => {
                self.problem(
                    path,
                    format!(
                        "{text:?} has host bits set; did you mean \"{}\"?",
                        net.trunc()
                    ),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.problem(
                    path,
                    format!("{text:?} is not a CIDR (e.g. 10.0.0.0/24 or fd00::/64)"),
                );
                None
            }
        }
    }

    pub(super) fn ports(&mut self, path: &KeyPath, ports: &[u16]) -> Option<BTreeSet<u16>> {
        let mut set = BTreeSet::new();
        for (i, port) in ports.iter().enumerate() {
            if *port == 0 {
                self.problem(&path.index(i), "port 0 is not a port");
                return None;
            }
            set.insert(*port);
        }
        Some(set)
    }

    pub(super) fn duration(
        &mut self,
        path: &KeyPath,
        text: Option<&str>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match duration::parse(text) {
            Ok(d) if d.is_zero() => {
                self.problem(path, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }
}
