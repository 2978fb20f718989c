//! Inbound plaintext to pods refused (or passed, by mode) like the node's: `steer_inbound`
//! attached in each registered pod's network namespace, and the maps it reads there (see
//! `tunnel-ebpf/src/steer.rs`). A pod's link is pinned as `<bpf_dir>/pods/<uid>`, so its
//! steering outlives the daemon: while no daemon runs, the pod's plaintext listener slot is
//! empty and other hosts' plaintext to the pod is dropped, never delivered.

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    fs,
    net::IpAddr,
    os::fd::BorrowedFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, SockMap},
    programs::{
        Program,
        links::{FdLink, PinnedLink},
    },
};
use tunnel_common::{
    AF_INET, AF_INET6, IpKey, MAP_NODE_ADDRESSES, MAP_POD_ADDRESSES, MAP_POD_LISTENERS,
    MAX_POD_LISTENERS, PRESENT, PROGRAM_STEER_INBOUND, PodSteer,
};

use super::{EbpfError, maps::ipv6_words};

/// The program and maps pods' steering needs, kept from the install.
pub struct PodSteering {
    /// The loaded object: `steer_inbound` is attached from it to each pod's namespace.
    ebpf: Mutex<Ebpf>,
    maps: Mutex<Maps>,
    pins: PathBuf,
}

struct Maps {
    addresses: HashMap<MapData, IpKey, PodSteer>,
    listeners: SockMap<MapData>,
    node_addresses: HashMap<MapData, IpKey, u8>,
    /// Listener slots in use.
    used: BTreeSet<u32>,
}

/// One pod's steering as set: its addresses and listener slots, given back by
/// [`PodSteering::unsteer`].
#[derive(Debug, Default)]
pub struct Steered {
    addresses: Vec<IpKey>,
    slots: Vec<u32>,
}

fn key(ip: IpAddr) -> IpKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpKey {
            addr: [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
            family: u32::from(AF_INET),
        },
        IpAddr::V6(v6) => IpKey {
            addr: ipv6_words(v6.octets()),
            family: u32::from(AF_INET6),
        },
    }
}

impl PodSteering {
    /// From the install's loaded object (its `steer_inbound` already loaded) and its pinned
    /// maps.
    pub(super) fn new(ebpf: Ebpf, maps_dir: &Path, bpf_dir: &Path) -> Result<Self, EbpfError> {
        let open = |name: &'static str| {
            MapData::from_pin(maps_dir.join(name)).map_err(EbpfError::map(name))
        };
        let addresses = HashMap::try_from(aya::maps::Map::HashMap(open(MAP_POD_ADDRESSES)?))
            .map_err(EbpfError::map(MAP_POD_ADDRESSES))?;
        let listeners = SockMap::try_from(aya::maps::Map::SockMap(open(MAP_POD_LISTENERS)?))
            .map_err(EbpfError::map(MAP_POD_LISTENERS))?;
        let node_addresses = HashMap::try_from(aya::maps::Map::HashMap(open(MAP_NODE_ADDRESSES)?))
            .map_err(EbpfError::map(MAP_NODE_ADDRESSES))?;
        let pins = bpf_dir.join("pods");
        fs::create_dir_all(&pins).map_err(|source| EbpfError::CreateDir {
            path: pins.clone(),
            source,
        })?;
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            maps: Mutex::new(Maps {
                addresses,
                listeners,
                node_addresses,
                used: BTreeSet::new(),
            }),
            pins,
        })
    }

    /// Attaches `steer_inbound` in a pod's namespace and pins the link as the pod's,
    /// replacing an earlier run's pin after the new link is attached (so the namespace is
    /// never without steering).
    pub fn attach(&self, uid: &str, netns: &fs::File) -> Result<(), EbpfError> {
        let name = PROGRAM_STEER_INBOUND;
        let mut ebpf = self.ebpf.lock().expect("pod steering lock poisoned");
        let Some(Program::SkLookup(program)) = ebpf.program_mut(name) else {
            return Err(EbpfError::MissingProgram(name));
        };
        let program_error = |step| {
            move |e: aya::programs::ProgramError| EbpfError::Program {
                step,
                name,
                source: e.into(),
            }
        };
        let id = program.attach(netns).map_err(program_error("attach"))?;
        let link = FdLink::from(
            program
                .take_link(id)
                .map_err(program_error("take the link of"))?,
        );
        let path = self.pin_path(uid);
        // bpffs refuses names with a dot.
        let temporary = self.pins.join(format!("next-{uid}"));
        let _ = fs::remove_file(&temporary);
        link.pin(&temporary).map_err(|source| EbpfError::Pin {
            path: temporary.clone(),
            source,
        })?;
        if path.exists() {
            unpin(&path)?;
        }
        fs::rename(&temporary, &path).map_err(|source| EbpfError::Remove { path, source })
    }

    /// Detaches a pod's steering (its namespace is gone or it was removed).
    pub fn detach(&self, uid: &str) -> Result<(), EbpfError> {
        let path = self.pin_path(uid);
        if path.exists() {
            unpin(&path)?;
        }
        Ok(())
    }

    /// Detaches the steering of every pod not in `keep` (an earlier run's pods that were not
    /// taken back).
    pub fn sweep(&self, keep: &BTreeSet<String>) -> Vec<String> {
        let mut swept = Vec::new();
        for entry in fs::read_dir(&self.pins).into_iter().flatten().flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&uid) && self.detach(&uid).is_ok() {
                swept.push(uid);
            }
        }
        swept
    }

    /// Steers other hosts' plaintext to `ips` (any port but `hbone_port`) to `listeners`
    /// (each with whether it is the IPv6 one). On failure nothing of it stays set.
    pub fn steer(
        &self,
        ips: &[IpAddr],
        hbone_port: u16,
        listeners: &[(bool, BorrowedFd<'_>)],
    ) -> Result<Steered, EbpfError> {
        let mut steered = Steered::default();
        let filled = self.fill(&mut steered, ips, hbone_port, listeners);
        if filled.is_err() {
            self.unsteer(&steered);
        }
        filled.map(|()| steered)
    }

    /// [`PodSteering::steer`]'s entries, each recorded in `steered` as it is set.
    fn fill(
        &self,
        steered: &mut Steered,
        ips: &[IpAddr],
        hbone_port: u16,
        listeners: &[(bool, BorrowedFd<'_>)],
    ) -> Result<(), EbpfError> {
        let mut maps = self.maps.lock().expect("pod steering lock poisoned");
        let mut slot_of_family = StdHashMap::new();
        for (ipv6, socket) in listeners {
            let slot = (0..MAX_POD_LISTENERS)
                .find(|s| !maps.used.contains(s))
                .ok_or(EbpfError::Full {
                    name: MAP_POD_LISTENERS,
                    capacity: MAX_POD_LISTENERS,
                })?;
            maps.used.insert(slot);
            steered.slots.push(slot);
            // The listener goes in before any address points at it.
            maps.listeners
                .set(slot, socket, 0)
                .map_err(EbpfError::map(MAP_POD_LISTENERS))?;
            slot_of_family.insert(*ipv6, slot);
        }
        for ip in ips {
            let Some(slot) = slot_of_family.get(&ip.to_canonical().is_ipv6()) else {
                continue;
            };
            let entry = PodSteer {
                slot: *slot,
                hbone_port,
                _pad: 0,
            };
            let key = key(*ip);
            maps.addresses
                .insert(key, entry, 0)
                .map_err(EbpfError::map(MAP_POD_ADDRESSES))?;
            steered.addresses.push(key);
        }
        Ok(())
    }

    /// Takes a pod's addresses out of steering and frees its slots.
    pub fn unsteer(&self, steered: &Steered) {
        let mut maps = self.maps.lock().expect("pod steering lock poisoned");
        for key in &steered.addresses {
            let _ = maps.addresses.remove(key);
        }
        for slot in &steered.slots {
            let _ = maps.listeners.clear_index(slot);
            maps.used.remove(slot);
        }
    }

    /// Removes addresses no registered pod has (an earlier run's), keeping `keep`.
    pub fn forget_addresses_except(&self, keep: &[IpAddr]) {
        let keep: BTreeSet<IpKey> = keep.iter().map(|ip| key(*ip)).collect();
        let mut maps = self.maps.lock().expect("pod steering lock poisoned");
        let stale: Vec<IpKey> = maps
            .addresses
            .keys()
            .flatten()
            .filter(|k| !keep.contains(k))
            .collect();
        for key in stale {
            let _ = maps.addresses.remove(&key);
        }
    }

    /// The node's own addresses, whose connections to pods are not steered.
    pub fn set_node_addresses(&self, ips: &[IpAddr]) -> Result<(), EbpfError> {
        let wanted: BTreeSet<IpKey> = ips.iter().map(|ip| key(*ip)).collect();
        let mut maps = self.maps.lock().expect("pod steering lock poisoned");
        let present: BTreeSet<IpKey> = maps.node_addresses.keys().flatten().collect();
        for key in wanted.difference(&present) {
            maps.node_addresses
                .insert(key, PRESENT, 0)
                .map_err(EbpfError::map(MAP_NODE_ADDRESSES))?;
        }
        for key in present.difference(&wanted) {
            let _ = maps.node_addresses.remove(key);
        }
        Ok(())
    }

    fn pin_path(&self, uid: &str) -> PathBuf {
        self.pins.join(uid)
    }
}

fn unpin(path: &Path) -> Result<(), EbpfError> {
    let link = PinnedLink::from_pin(path).map_err(|source| EbpfError::Retire {
        path: path.into(),
        source,
    })?;
    let link: FdLink = link.unpin().map_err(|source| EbpfError::Remove {
        path: path.into(),
        source,
    })?;
    drop(link);
    Ok(())
}
