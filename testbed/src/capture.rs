//! Packet captures on a test host's interface (tcpdump), to check what crossed the wire.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{Host, Proc};

pub struct PacketCapture {
    proc: Proc,
    file: PathBuf,
}

pub struct CapturedPackets {
    file: PathBuf,
    bytes: Vec<u8>,
}

impl PacketCapture {
    pub(crate) fn start(host: &Host, interface: &str, filter: &str, file: PathBuf) -> Self {
        crate::require_tool("tcpdump");
        let mut proc = host
            .command("tcpdump")
            // Immediate mode: otherwise libpcap hands packets over in blocks, and a block that
            // is not full when we stop is lost ("N received by filter, 0 captured").
            .args([
                "-i",
                interface,
                "--immediate-mode",
                "-U",
                // 256 MiB of kernel buffer (in KiB): immediate mode under a saturating
                // transfer otherwise drops packets, and a dropped packet is unchecked wire.
                "-B",
                "262144",
                "-n",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .args(filter.split_whitespace())
            .spawn();
        proc.wait_for("listening on", Duration::from_secs(10));
        Self { proc, file }
    }

    /// Stops the capture after it has written everything it saw.
    pub fn stop(mut self) -> CapturedPackets {
        self.proc.signal("INT");
        self.proc
            .wait_timeout(Duration::from_secs(10))
            .expect("tcpdump stops on SIGINT");
        // tcpdump's last words: "N packets dropped by kernel". Every packet must be checked.
        let report = self.proc.stderr();
        let dropped = report
            .lines()
            .find_map(|l| l.trim().strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert_eq!(
            dropped,
            Some(0),
            "the capture must see every packet; tcpdump said:\n{report}"
        );
        let bytes =
            fs::read(&self.file).unwrap_or_else(|e| panic!("read {}: {e}", self.file.display()));
        CapturedPackets {
            file: self.file.clone(),
            bytes,
        }
    }
}

impl CapturedPackets {
    pub fn path(&self) -> &Path {
        &self.file
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the raw capture contains `needle` anywhere (headers and payloads).
    pub fn contains(&self, needle: &[u8]) -> bool {
        let Some(&first) = needle.first() else {
            return false;
        };
        // Compare only where the first byte matches: captures run to hundreds of MiB.
        self.bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| b == first && self.bytes[i..].starts_with(needle))
    }

    /// How many packets the capture holds.
    pub fn packet_count(&self) -> usize {
        self.count_matching("")
    }

    /// How many captured packets match a tcpdump filter expression.
    pub fn count_matching(&self, filter: &str) -> usize {
        let mut command = Command::new("tcpdump");
        command.args(["-nn", "-q", "-r"]).arg(&self.file);
        if !filter.is_empty() {
            command.args(filter.split_whitespace());
        }
        let output = command.output().expect("run tcpdump -r");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// How many captured packets do not match a tcpdump filter expression.
    pub fn packets_not_matching(&self, filter: &str) -> usize {
        self.count_matching(&format!("not ( {filter} )"))
    }

    /// Every TCP port seen, source or destination.
    pub fn tcp_ports(&self) -> BTreeSet<u16> {
        let output = Command::new("tcpdump")
            .args(["-nn", "-q", "-r"])
            .arg(&self.file)
            .arg("tcp")
            .output()
            .expect("run tcpdump -r");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut ports = BTreeSet::new();
        // "12:00:00.000000 IP 10.0.0.1.43210 > 10.0.0.2.15008: tcp 0" (IP6 alike): the
        // fields around '>' are address.port.
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(arrow) = fields.iter().position(|f| *f == ">") {
                for endpoint in [fields.get(arrow - 1), fields.get(arrow + 1)]
                    .into_iter()
                    .flatten()
                {
                    if let Some(port) = endpoint
                        .trim_end_matches(':')
                        .rsplit('.')
                        .next()
                        .and_then(|p| p.parse().ok())
                    {
                        ports.insert(port);
                    }
                }
            }
        }
        ports
    }
}
