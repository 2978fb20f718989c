//! The kernel side, from userspace: load the capture programs, fill their maps from config,
//! attach them to the capture cgroup and pin everything under `bpf_dir`, so capture outlives
//! the daemon. While no daemon listens, captured connects are refused (fail closed); the next
//! `tunnel run` takes over the pinned state without a moment of uncaptured traffic, and
//! `tunnel uninstall` removes it.
//!
//! Pin layout (see ARCHITECTURE.md):
//! ```text
//! <bpf_dir>/maps-v<layout>/<MAP>        maps, shared by successive runs of the same layout
//! <bpf_dir>/links/<generation>/<prog>   one directory of cgroup links per run
//! <bpf_dir>/pods/<uid>                  steer_inbound's link in a registered pod's namespace
//! ```

mod aya_error;
mod inventory;
mod local_hop;
mod maps;
mod original_dst;
mod pins;
mod pod_steering;
mod queue_migration;

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::{SocketAddrV4, SocketAddrV6},
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, Program, ProgramError,
        links::{FdLink, LinkError},
    },
};
pub use aya_error::AyaError;
pub use inventory::{CaptureState, MapView, ProgramView, SockmapCounts};
use ipnet::IpNet;
pub use local_hop::{DeliveryMarks, bound_in_force, receiver_unread_count};
pub use original_dst::{OriginalDestination, OriginalDstTable};
pub use pins::{Uninstalled, check_bpf_dir};
pub use pod_steering::{PodSteering, Steered};
pub use queue_migration::QueueMigration;
use tunnel_common::{
    MAP_LOCAL_SENT, MAP_NAMES, MAP_ORIGINAL_DST_BY_TUPLE, PROGRAM_CONNECT4, PROGRAM_CONNECT6,
    PROGRAM_GETPEERNAME4, PROGRAM_GETPEERNAME6, PROGRAM_SOCK_OPS, PROGRAM_SOCK_OPS_DAEMON,
    PROGRAM_STEER_INBOUND,
};

use crate::cgroup::CgroupDir;

/// Every program, in attach order: the hooks that read what `connect4/6` record go first, so
/// from the first captured connect on, each connection is published to the daemon and shows
/// the application its original peer.
const PROGRAMS: [&str; 5] = [
    PROGRAM_SOCK_OPS,
    PROGRAM_GETPEERNAME4,
    PROGRAM_GETPEERNAME6,
    PROGRAM_CONNECT4,
    PROGRAM_CONNECT6,
];

/// The object `build.rs` compiled from `tunnel-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tunnel-ebpf"));

/// Everything the programs need to know, resolved from config.
#[derive(Clone, Debug)]
pub struct CaptureSpec {
    /// Processes in this cgroup (and below) are captured.
    pub cgroup: CgroupDir,
    pub bpf_dir: PathBuf,
    pub listener_v4: SocketAddrV4,
    /// Only needed when an IPv6 destination is captured.
    pub listener_v6: Option<SocketAddrV6>,
    pub destinations: Vec<IpNet>,
    pub exclude: Vec<IpNet>,
    /// `None` captures every port.
    pub ports: Option<BTreeSet<u16>>,
    /// Never captured: the daemon's own cgroup, so its upstream connects cannot loop.
    pub exempt_cgroups: BTreeSet<u64>,
    /// The daemon's own cgroup, where `sock_ops_daemon` is attached for the sockmap hop.
    pub daemon_cgroup: PathBuf,
    /// The hop between applications and the daemon through `LOCAL_PEERS` (if the kernel
    /// lets `redirect_local` attach).
    pub sockmap: bool,
    /// Cgroups of configured workloads (identity is picked from the deepest one).
    pub workload_cgroups: BTreeSet<u64>,
    /// Local ports owned by workloads: other hosts' connections to them are steered to the
    /// inbound-plaintext listener.
    pub steer_ports: BTreeSet<u16>,
}

/// The daemon's network namespace, where `steer_inbound` is attached.
const OWN_NETNS: &str = "/proc/self/ns/net";

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "{path} is on a {fstype} filesystem, not bpffs; pins must live on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)"
    )]
    NotBpffs { path: PathBuf, fstype: String },
    #[error("failed to mount bpffs at {path}")]
    MountBpffs { path: PathBuf, source: io::Error },
    #[error("failed to read /proc/self/mounts")]
    Mounts(#[source] io::Error),
    #[error("failed to create {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("failed to load the capture object")]
    Load(#[source] AyaError),
    #[error("the capture object has no program {0}")]
    MissingProgram(&'static str),
    #[error("the capture object has no map {0}")]
    MissingMap(&'static str),
    #[error("failed to {step} program {name}")]
    Program {
        step: &'static str,
        name: &'static str,
        source: AyaError,
    },
    #[error("the link of program {name} cannot be pinned")]
    Link {
        name: &'static str,
        source: LinkError,
    },
    #[error("failed to open the capture cgroup {path}")]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error("failed to open the daemon's network namespace {path}")]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("map {name}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("failed to pin {path}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("failed to open the earlier run's link {path}")]
    Retire { path: PathBuf, source: LinkError },
    #[error("failed to remove {path}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("map {name} is full ({capacity} entries)")]
    Full { name: &'static str, capacity: u32 },
}

impl EbpfError {
    /// Adapts an error of map `name` (for `map_err`).
    fn map(name: &'static str) -> impl Fn(aya::maps::MapError) -> Self {
        move |source| Self::Map { name, source }
    }
}

/// Installed capture. Dropping it leaves capture in place (it is pinned); only
/// [`uninstall`] removes it.
pub struct Capture {
    original_dst: OriginalDstTable,
    retired_generations: Vec<String>,
    programs: Vec<ProgramView>,
    maps_dir: PathBuf,
    /// Every other map, kept for `/debug/capture` (their fds; the programs and links stay
    /// alive through their pins).
    maps: Vec<(&'static str, aya::maps::Map)>,
    /// The loaded object, for attaching `steer_inbound` in pods' namespaces.
    pod_steering: PodSteering,
    queue_migration: QueueMigration,
    local_hop: Option<local_hop::RedirectAttached>,
    delivery_marks: Option<DeliveryMarks>,
}

/// What the rest of the daemon keeps of an installed capture.
pub struct CaptureParts {
    /// Where accepted connections find their original destination.
    pub original_dst: Arc<OriginalDstTable>,
    /// With the sockmap hop on: what marks the daemon's deliveries to join it.
    pub delivery_marks: Option<Arc<DeliveryMarks>>,
    /// What the admin API shows of the capture.
    pub state: CaptureState,
    pub pod_steering: PodSteering,
    /// For every listener the daemon opens.
    pub queue_migration: QueueMigration,
}

impl Capture {
    /// Loads, configures, attaches and pins the programs, then retires any earlier run's
    /// links. Order matters: the maps are synced and the new links attached before old links
    /// go, so at every instant at least one set of programs captures.
    /// `plaintext_listeners` are the inbound-plaintext listening sockets with their slots
    /// (`tunnel_common::PLAINTEXT_LISTENER_V4/V6`).
    pub fn install(
        spec: &CaptureSpec,
        plaintext_listeners: &[(u32, BorrowedFd<'_>)],
    ) -> Result<Self, EbpfError> {
        let layout = pins::Layout::prepare(&spec.bpf_dir)?;
        let installed = Self::install_in(&layout, spec, plaintext_listeners);
        if installed.is_err() {
            // Leave the earlier run's capture (if any) exactly as it was.
            layout.abandon();
        }
        installed
    }

    fn install_in(
        layout: &pins::Layout,
        spec: &CaptureSpec,
        plaintext_listeners: &[(u32, BorrowedFd<'_>)],
    ) -> Result<Self, EbpfError> {
        let mut loader = EbpfLoader::new();
        let map_pins: Vec<(&str, PathBuf)> = MAP_NAMES
            .iter()
            .map(|name| (*name, layout.map_pin(name)))
            .collect();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| EbpfError::Load(e.into()))?;
        // Before the config word lets sockets join the map: each takes the map's program
        // when it joins. A kernel that refuses it leaves the hop on loopback TCP.
        let local_hop = if spec.sockmap {
            local_hop::attach_redirect(&mut ebpf)
                .inspect_err(|e| tracing::warn!(error = %crate::errors::chain(e), "[capture] sockmap: the kernel refused the sockmap hop; applications and the daemon stay on loopback TCP"))
                .ok()
        } else {
            None
        };
        let sockmap = local_hop.is_some();
        if sockmap {
            local_hop::write_kernel_layout(&mut ebpf)?;
        }
        maps::sync(&mut ebpf, spec, sockmap)?;
        // The listeners go in before the steering program attaches, so it never finds an
        // empty slot while this daemon runs.
        maps::set_plaintext_listeners(&mut ebpf, plaintext_listeners)?;

        let cgroup = File::open(&spec.cgroup.path).map_err(|source| EbpfError::OpenCgroup {
            path: spec.cgroup.path.clone(),
            source,
        })?;
        let mut programs = Vec::new();
        for name in PROGRAMS {
            let link = attach(&mut ebpf, name, &cgroup)?;
            layout.pin_link(name, link)?;
            programs.push(program_view(layout, name, &spec.cgroup.path));
        }
        if sockmap {
            let daemon = local_hop::daemon_cgroup(&spec.daemon_cgroup)?;
            let link = attach(&mut ebpf, PROGRAM_SOCK_OPS_DAEMON, &daemon)?;
            layout.pin_link(PROGRAM_SOCK_OPS_DAEMON, link)?;
            programs.push(program_view(
                layout,
                PROGRAM_SOCK_OPS_DAEMON,
                &spec.daemon_cgroup,
            ));
        }
        let netns = File::open(OWN_NETNS).map_err(|source| EbpfError::OpenNetns {
            path: OWN_NETNS.into(),
            source,
        })?;
        let link = attach(&mut ebpf, PROGRAM_STEER_INBOUND, &netns)?;
        layout.pin_link(PROGRAM_STEER_INBOUND, link)?;
        programs.push(program_view(
            layout,
            PROGRAM_STEER_INBOUND,
            Path::new(OWN_NETNS),
        ));

        let delivery_marks = if sockmap {
            Some(DeliveryMarks::open(&layout.map_pin(MAP_LOCAL_SENT))?)
        } else {
            None
        };
        let retired_generations = layout.retire_older_runs()?;
        let map = ebpf
            .take_map(MAP_ORIGINAL_DST_BY_TUPLE)
            .ok_or(EbpfError::MissingMap(MAP_ORIGINAL_DST_BY_TUPLE))?;
        let original_dst = OriginalDstTable::new(map)?;
        let maps = MAP_NAMES
            .iter()
            .filter(|name| **name != MAP_ORIGINAL_DST_BY_TUPLE)
            .filter_map(|name| Some((*name, ebpf.take_map(name)?)))
            .collect();
        let queue_migration = QueueMigration::load(&mut ebpf)?;
        let pod_steering = PodSteering::new(ebpf, layout.maps_dir(), &spec.bpf_dir)?;
        Ok(Self {
            original_dst,
            retired_generations,
            programs,
            maps_dir: layout.maps_dir().to_path_buf(),
            maps,
            pod_steering,
            queue_migration,
            local_hop,
            delivery_marks,
        })
    }

    pub fn into_parts(self) -> CaptureParts {
        let original_dst = Arc::new(self.original_dst);
        let state = CaptureState {
            programs: self.programs,
            maps_dir: self.maps_dir,
            maps: self.maps,
            original_dst: original_dst.clone(),
            _local_hop: self.local_hop,
        };
        CaptureParts {
            original_dst,
            delivery_marks: self.delivery_marks.map(Arc::new),
            state,
            pod_steering: self.pod_steering,
            queue_migration: self.queue_migration,
        }
    }

    /// Generations of earlier runs whose links this install replaced.
    pub fn retired_generations(&self) -> &[String] {
        &self.retired_generations
    }
}

fn program_view(layout: &pins::Layout, name: &'static str, target: &Path) -> ProgramView {
    ProgramView {
        name,
        hook: inventory::hook(name),
        attached_to: target.to_path_buf(),
        link_pin: layout.link_pin(name),
    }
}

/// Removes every pinned link and map under `bpf_dir`. Capture stops at once: captured
/// processes connect directly again.
pub fn uninstall(bpf_dir: &Path) -> Result<Uninstalled, EbpfError> {
    pins::uninstall(bpf_dir)
}

/// Loads one program and attaches it to its target (the capture cgroup, or the network
/// namespace for `sk_lookup`), returning the link to pin.
fn attach(ebpf: &mut Ebpf, name: &'static str, target: &File) -> Result<FdLink, EbpfError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?;
    let program_error = |step| {
        move |e: ProgramError| EbpfError::Program {
            step,
            name,
            source: e.into(),
        }
    };
    let link_error = |source| EbpfError::Link { name, source };
    // On kernels with bpf_link (5.7+, which we require) aya attaches through a link, and a
    // cgroup link always coexists with other programs on the hook (Cilium's socket LB, an
    // earlier run of ours during takeover); the kernel rejects BPF_F_ALLOW_MULTI in
    // link_create flags, so `Single` (flags 0) is the right mode here.
    let mode = CgroupAttachMode::Single;
    match program {
        Program::CgroupSockAddr(program) => {
            program.load().map_err(program_error("load"))?;
            let id = program
                .attach(target, mode)
                .map_err(program_error("attach"))?;
            let link = program
                .take_link(id)
                .map_err(program_error("take the link of"))?;
            FdLink::try_from(link).map_err(link_error)
        }
        Program::SockOps(program) => {
            program.load().map_err(program_error("load"))?;
            let id = program
                .attach(target, mode)
                .map_err(program_error("attach"))?;
            let link = program
                .take_link(id)
                .map_err(program_error("take the link of"))?;
            FdLink::try_from(link).map_err(link_error)
        }
        // sk_lookup (Linux 5.9) runs for every incoming connection of the namespace; several
        // programs may be attached at once (an earlier run's during takeover).
        Program::SkLookup(program) => {
            program.load().map_err(program_error("load"))?;
            let id = program.attach(target).map_err(program_error("attach"))?;
            let link = program
                .take_link(id)
                .map_err(program_error("take the link of"))?;
            Ok(FdLink::from(link))
        }
        _ => Err(EbpfError::MissingProgram(name)),
    }
}
