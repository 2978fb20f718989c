//! One test host: a network namespace with `lo` and an `eth0` on the testbed's bridge.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use crate::{PacketCapture, process::HostCommand, run};

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    default_cgroup: PathBuf,
}

impl Host {
    pub(crate) fn create(
        id: &str,
        name: &str,
        index: u8,
        switch: &str,
        default_cgroup: PathBuf,
    ) -> Self {
        let netns = format!("{id}h{index}");
        let (outside, inside) = (format!("{id}o{index}"), format!("{id}i{index}"));
        assert!(outside.len() <= 15, "interface name {outside} too long");
        run("ip", &["netns", "add", &netns]);
        run(
            "ip",
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &outside, "netns", switch]);
        run("ip", &["link", "set", &inside, "netns", &netns]);
        run(
            "ip",
            &["-n", switch, "link", "set", &outside, "master", "br0", "up"],
        );
        run(
            "ip",
            &["-n", &netns, "link", "set", &inside, "name", "eth0"],
        );
        let ipv4 = Ipv4Addr::new(10, 0, 0, index);
        let ipv6: Ipv6Addr = format!("fd00::{index}").parse().expect("valid address");
        run(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ipv4}/24"),
                "dev",
                "eth0",
            ],
        );
        // nodad: usable at once, instead of "tentative" for a second or two.
        run(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ipv6}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        run("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        Self {
            name: name.into(),
            netns,
            ipv4,
            ipv6,
            default_cgroup,
        }
    }

    /// A command to run in this host, in a testbed cgroup unless `.in_cgroup` says which.
    pub fn command(&self, program: &str) -> HostCommand {
        HostCommand::new(self.netns_path(), self.default_cgroup.clone(), program)
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.netns))
    }

    /// Waits until something listens on `port` (TCP) in this host.
    pub fn wait_for_listener(&self, port: u16, timeout: Duration) {
        let listening = || {
            let out = self
                .command("ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output(Duration::from_secs(5));
            !out.stdout.trim().is_empty()
        };
        crate::wait_until(timeout, Duration::from_millis(20), listening, || {
            format!("nothing listens on port {port} in host {}", self.name)
        });
    }

    /// Established TCP connections to `port` in this host (e.g. pooled tunnel connections).
    pub fn established_to(&self, port: u16) -> usize {
        let out = self
            .command("ss")
            .args(["-Htn", "state", "established", &format!("dport = :{port}")])
            .output(Duration::from_secs(5));
        out.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// Starts tcpdump on `interface`; stop it with [`PacketCapture::stop`].
    pub fn capture(&self, interface: &str, filter: &str, file: PathBuf) -> PacketCapture {
        PacketCapture::start(self, interface, filter, file)
    }
}
