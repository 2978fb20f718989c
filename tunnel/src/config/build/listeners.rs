//! `[listen]`: the daemon's listener addresses (IPv6 twins derived when unset), the admin
//! API kept on loopback, the control socket's path, and no two listeners on one port.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    path::PathBuf,
};

use ipnet::IpNet;

use super::{Checker, KeyPath, at};
use crate::config::{
    Capture, DEFAULT_ADMIN, DEFAULT_BACKLOG, DEFAULT_CONTROL, DEFAULT_HEALTH, DEFAULT_INBOUND,
    DEFAULT_INBOUND_PLAINTEXT, DEFAULT_OUTBOUND, Listen, raw::RawListen,
};

impl Checker<'_> {
    pub(super) fn listen(&mut self, raw: &RawListen, capture: Option<&Capture>) -> Option<Listen> {
        let path = at("listen");
        let outbound = self.socket_addr(
            &path.key("outbound"),
            raw.outbound.as_deref().unwrap_or(DEFAULT_OUTBOUND),
        );
        let inbound = self.socket_addr(
            &path.key("inbound"),
            raw.inbound.as_deref().unwrap_or(DEFAULT_INBOUND),
        );
        let admin = self.socket_addr(
            &path.key("admin"),
            raw.admin.as_deref().unwrap_or(DEFAULT_ADMIN),
        );
        let health = self.socket_addr(
            &path.key("health"),
            raw.health.as_deref().unwrap_or(DEFAULT_HEALTH),
        );
        let control = match &raw.control {
            Some(text) => self
                .absolute_path(&path.key("control"), text)
                .map(|l| l.value),
            None => Some(PathBuf::from(DEFAULT_CONTROL)),
        };
        let outbound = match outbound? {
            SocketAddr::V4(v4) if !v4.ip().is_unspecified() => v4,
            other => {
                self.problem(
                    &path.key("outbound"),
                    format!("{other} must be a concrete IPv4 address (captured connects are rewritten to it), e.g. {DEFAULT_OUTBOUND}"),
                );
                return None;
            }
        };
        let wants_v6 =
            capture.is_some_and(|c| c.destinations.iter().any(|d| matches!(d, IpNet::V6(_))));
        let outbound_v6 = match &raw.outbound_v6 {
            Some(text) => match self.socket_addr(&path.key("outbound_v6"), text)? {
                SocketAddr::V6(v6) if !v6.ip().is_unspecified() => Some(v6),
                other => {
                    self.problem(
                        &path.key("outbound_v6"),
                        format!("{other} must be a concrete IPv6 address, e.g. [::1]:15001"),
                    );
                    return None;
                }
            },
            None if wants_v6 => Some(SocketAddrV6::new(
                Ipv6Addr::LOCALHOST,
                outbound.port(),
                0,
                0,
            )),
            None => None,
        };
        let inbound = inbound?;
        let inbound_v6 = self.wildcard_v6(&path.key("inbound_v6"), &raw.inbound_v6, inbound)?;
        let inbound_plaintext = self.socket_addr(
            &path.key("inbound_plaintext"),
            raw.inbound_plaintext
                .as_deref()
                .unwrap_or(DEFAULT_INBOUND_PLAINTEXT),
        )?;
        let inbound_plaintext_v6 = self.wildcard_v6(
            &path.key("inbound_plaintext_v6"),
            &raw.inbound_plaintext_v6,
            inbound_plaintext,
        )?;
        let backlog = self.at_least_one(&path.key("backlog"), raw.backlog, DEFAULT_BACKLOG);
        let listen = Listen {
            outbound,
            outbound_v6,
            inbound,
            inbound_v6,
            inbound_plaintext,
            inbound_plaintext_v6,
            admin: admin?,
            admin_allow_remote: raw.admin_allow_remote,
            health: health?,
            control: control?,
            backlog: backlog?,
        };
        self.admin_exposed(&listen);
        self.listener_ports_clash(raw, &listen);
        Some(listen)
    }

    /// An IPv6 listener beside an IPv4 one: as given at `key` (an IPv6 address), else the
    /// IPv6 wildcard on the same port when the IPv4 one is the IPv4 wildcard, else none.
    /// `None` when the given address is not IPv6 (a problem is recorded).
    fn wildcard_v6(
        &mut self,
        key: &KeyPath,
        given: &Option<String>,
        v4: SocketAddr,
    ) -> Option<Option<SocketAddrV6>> {
        match given {
            Some(text) => match self.socket_addr(key, text)? {
                SocketAddr::V6(v6) => Some(Some(v6)),
                other => {
                    self.problem(key, format!("{other} is not an IPv6 address"));
                    None
                }
            },
            None if v4.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => Some(Some(SocketAddrV6::new(
                Ipv6Addr::UNSPECIFIED,
                v4.port(),
                0,
                0,
            ))),
            None => Some(None),
        }
    }

    /// The admin API answers anyone who reaches it (no authentication): it shows the config
    /// and the connections, and changes the log filter. Loopback only, unless the file says
    /// otherwise in so many words.
    fn admin_exposed(&mut self, listen: &Listen) {
        if listen.admin.ip().is_loopback() || listen.admin_allow_remote {
            return;
        }
        self.problem(
            &at("listen").key("admin"),
            format!(
                "{} is not a loopback address; the admin API has no authentication (it shows the \
                 config and the connections, and changes the log filter), so it listens on \
                 127.0.0.1 or [::1] unless listen.admin_allow_remote = true",
                listen.admin
            ),
        );
    }

    /// Outbound, inbound, admin and health each need a port of their own: two listeners on
    /// one port cannot both bind (and a port shared with the reserved admin port would make
    /// it ambiguous). The IPv4 and IPv6 listeners of one role share a port by design. Each
    /// clash is reported once, at a key the file sets.
    fn listener_ports_clash(&mut self, raw: &RawListen, listen: &Listen) {
        let written = |key: &str| match key {
            "outbound" => raw.outbound.is_some(),
            "outbound_v6" => raw.outbound_v6.is_some(),
            "inbound" => raw.inbound.is_some(),
            "inbound_v6" => raw.inbound_v6.is_some(),
            "inbound_plaintext" => raw.inbound_plaintext.is_some(),
            "inbound_plaintext_v6" => raw.inbound_plaintext_v6.is_some(),
            "health" => raw.health.is_some(),
            _ => raw.admin.is_some(),
        };
        let role = |key: &'static str| key.trim_end_matches("_v6");
        let ports: Vec<(&'static str, u16)> = [
            ("outbound", Some(listen.outbound.port())),
            ("outbound_v6", listen.outbound_v6.map(|a| a.port())),
            ("inbound", Some(listen.inbound.port())),
            ("inbound_v6", listen.inbound_v6.map(|a| a.port())),
            ("inbound_plaintext", Some(listen.inbound_plaintext.port())),
            (
                "inbound_plaintext_v6",
                listen.inbound_plaintext_v6.map(|a| a.port()),
            ),
            ("admin", Some(listen.admin.port())),
            ("health", Some(listen.health.port())),
        ]
        .into_iter()
        .filter_map(|(key, port)| Some((key, port?)))
        .collect();
        let mut reported = BTreeSet::new();
        for (i, &(first, port)) in ports.iter().enumerate() {
            for &(second, _) in ports[i + 1..].iter().filter(|(_, p)| *p == port) {
                if role(first) == role(second) || !reported.insert((role(first), role(second))) {
                    continue;
                }
                let (key, other) = if written(second) || !written(first) {
                    (second, first)
                } else {
                    (first, second)
                };
                self.problem(
                    &at("listen").key(key),
                    format!(
                        "port {port} is also the port of listen.{other}; the outbound, inbound, \
                         inbound-plaintext, admin and health listeners each need a port of their \
                         own"
                    ),
                );
            }
        }
    }
}
