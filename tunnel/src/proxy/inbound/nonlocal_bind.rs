//! The inbound side proves that a destination is an address of this host by binding the
//! delivery socket to it, which holds only while the kernel refuses binds to addresses the
//! host does not have. With `net.ipv4.ip_nonlocal_bind` (or its IPv6 twin) set, every bind
//! succeeds, and an allowed caller could make the daemon dial a port on another host. So
//! the daemon does not start with either set, and since they can be changed at any time, it
//! re-reads them every [`RECHECK`]: while one is set, every CONNECT is refused.

use std::{
    fs, io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tracing::error;

const SYSCTLS: [(&str, &str); 2] = [
    (
        "net.ipv4.ip_nonlocal_bind",
        "/proc/sys/net/ipv4/ip_nonlocal_bind",
    ),
    (
        "net.ipv6.ip_nonlocal_bind",
        "/proc/sys/net/ipv6/ip_nonlocal_bind",
    ),
];

/// How often the sysctls are re-read while the daemon runs.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The names of the non-local-bind sysctls that are set in this network namespace. A
/// sysctl that does not exist (IPv6 disabled) is not set.
pub fn set_sysctls() -> io::Result<Vec<&'static str>> {
    let mut set = Vec::new();
    for (name, path) in SYSCTLS {
        match fs::read_to_string(path) {
            Ok(value) if value.trim() != "0" => set.push(name),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(set)
}

/// Whether delivery is safe now, as last read; shared with every stream.
#[derive(Clone, Debug, Default)]
pub struct NonlocalBind {
    allowed: Arc<AtomicBool>,
}

impl NonlocalBind {
    /// Whether binds to foreign addresses succeed now (the bind proof does not hold).
    pub fn allowed(&self) -> bool {
        self.allowed.load(Ordering::Relaxed)
    }

    /// Re-reads the sysctls every [`RECHECK`], forever; an unreadable sysctl counts as set.
    pub async fn watch(self) {
        loop {
            let set = set_sysctls().unwrap_or_else(|_| vec!["(unreadable)"]);
            let was = self.allowed.swap(!set.is_empty(), Ordering::Relaxed);
            if !set.is_empty() && !was {
                error!(
                    sysctls = ?set,
                    "non-local binds were enabled: every CONNECT is refused until they are disabled \
                     (this daemon proves a destination is local by binding to it)"
                );
            }
            tokio::time::sleep(RECHECK).await;
        }
    }
}
