//! `[capture]`: which cgroup's connects are captured, to which destinations and ports, and
//! where the eBPF pins live.

use ipnet::IpNet;

use super::{Checker, at};
use crate::config::{Capture, DEFAULT_BPF_DIR, raw::RawCapture};

impl Checker<'_> {
    /// `service_cidrs`: `[kubernetes] service_cidrs`, captured like the listed destinations
    /// (a connection to a ClusterIP is resolved to an endpoint by the daemon).
    pub(super) fn capture(&mut self, raw: &RawCapture, service_cidrs: &[IpNet]) -> Option<Capture> {
        let path = at("capture");
        let cgroup = self.absolute_path(&path.key("cgroup"), &raw.cgroup);
        let destinations = self
            .cidrs(&path.key("destinations"), &raw.destinations)
            .map(|mut listed| {
                for net in service_cidrs {
                    if !listed.contains(net) {
                        listed.push(*net);
                    }
                }
                listed
            });
        if raw.destinations.is_empty() {
            self.problem(
                &path.key("destinations"),
                "an empty list captures nothing; list the CIDRs whose hosts run a tunnel daemon",
            );
        }
        let exclude = self.cidrs(&path.key("exclude"), &raw.exclude);
        let ports = match &raw.ports {
            None => Some(None),
            Some(list) if list.is_empty() => {
                self.problem(
                    &path.key("ports"),
                    "an empty list captures nothing; remove the key to capture every port",
                );
                None
            }
            Some(list) => self.ports(&path.key("ports"), list).map(Some),
        };
        let bpf_dir = self.absolute_path(
            &path.key("bpf_dir"),
            raw.bpf_dir.as_deref().unwrap_or(DEFAULT_BPF_DIR),
        );
        Some(Capture {
            cgroup: cgroup?,
            destinations: destinations?,
            ports: ports?,
            exclude: exclude?,
            bpf_dir: bpf_dir?,
            sockmap: raw.sockmap,
        })
    }
}
