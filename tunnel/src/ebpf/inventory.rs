//! What the running daemon installed, for the admin API's `/debug/capture`: each program
//! with its hook, what it is attached to and its link's pin, and each map with its kernel
//! metadata and (where cheap) how many entries it holds. Built from the handles the install
//! kept, not by reopening pins.

use std::{path::PathBuf, sync::Arc};

use aya::maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray};
use serde::Serialize;
use tunnel_common::{
    IpKey, LOCAL_FELL_BACK, LOCAL_JOIN_FAILED, LOCAL_JOINED, LOCAL_REDIRECTED, MAP_CONFIG,
    MAP_DESTINATIONS_V4, MAP_DESTINATIONS_V6, MAP_EXCLUDES_V4, MAP_EXCLUDES_V6, MAP_EXEMPT_CGROUPS,
    MAP_LOCAL_COUNTS, MAP_LOCAL_DELIVERIES, MAP_LOCAL_LAYOUT, MAP_LOCAL_PEERS, MAP_LOCAL_SENT,
    MAP_NODE_ADDRESSES, MAP_ORIGINAL_DST_BY_SOCKET, MAP_ORIGINAL_DST_BY_TUPLE,
    MAP_PLAINTEXT_LISTENERS, MAP_POD_ADDRESSES, MAP_POD_LISTENERS, MAP_PORTS, MAP_STEER_PORTS,
    MAP_WORKLOAD_CGROUPS, PROGRAM_CONNECT4, PROGRAM_CONNECT6, PROGRAM_GETPEERNAME4,
    PROGRAM_GETPEERNAME6, PROGRAM_SOCK_OPS, PROGRAM_SOCK_OPS_DAEMON, PROGRAM_STEER_INBOUND,
    PodSteer, SocketTuple,
};

use super::OriginalDstTable;

/// One attached program.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramView {
    pub name: &'static str,
    /// The kernel hook: `cgroup/connect4`, `sockops`, `sk_lookup`...
    pub hook: &'static str,
    /// The cgroup directory or network namespace it is attached to.
    pub attached_to: PathBuf,
    /// Its link's pin: the program stays attached while this file exists.
    pub link_pin: PathBuf,
}

/// One map.
#[derive(Clone, Debug, Serialize)]
pub struct MapView {
    pub name: &'static str,
    /// As the kernel reports it (`BPF_MAP_TYPE_*`, without the prefix).
    #[serde(rename = "type")]
    pub map_type: String,
    /// Kernel map id (`bpftool map dump id N`).
    pub id: Option<u32>,
    pub max_entries: Option<u32>,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
    pub pin: PathBuf,
    /// Entries in use now; `None` where counting is not possible or not meaningful (see
    /// `entries_note`).
    pub entries: Option<u64>,
    pub entries_note: Option<String>,
}

/// The installed capture as the daemon holds it after the install.
pub struct CaptureState {
    pub(super) programs: Vec<ProgramView>,
    pub(super) maps_dir: PathBuf,
    /// Every map the install loaded but the tuple map, kept (not reopened) for counting.
    pub(super) maps: Vec<(&'static str, Map)>,
    pub(super) original_dst: Arc<OriginalDstTable>,
    /// The sockmap hop's program stays attached while the daemon keeps this.
    pub(super) _local_hop: Option<super::local_hop::RedirectAttached>,
}

/// The hook each program runs at.
pub(super) fn hook(program: &str) -> &'static str {
    match program {
        PROGRAM_SOCK_OPS | PROGRAM_SOCK_OPS_DAEMON => "sockops",
        PROGRAM_GETPEERNAME4 => "cgroup/getpeername4",
        PROGRAM_GETPEERNAME6 => "cgroup/getpeername6",
        PROGRAM_CONNECT4 => "cgroup/connect4",
        PROGRAM_CONNECT6 => "cgroup/connect6",
        PROGRAM_STEER_INBOUND => "sk_lookup",
        _ => "unknown",
    }
}

impl CaptureState {
    pub fn programs(&self) -> &[ProgramView] {
        &self.programs
    }

    /// Where the maps are pinned.
    pub fn maps_dir(&self) -> &PathBuf {
        &self.maps_dir
    }

    /// The link pins that have gone (someone ran `tunnel uninstall`, or removed them): those
    /// programs are detached and capture is off. A `stat` per program.
    pub fn missing_links(&self) -> Vec<&'static str> {
        self.programs
            .iter()
            .filter(|p| !p.link_pin.exists())
            .map(|p| p.name)
            .collect()
    }

    /// What `redirect_local` counted, summed over CPUs; `None` if the map cannot be read.
    pub fn sockmap_counts(&self) -> Option<SockmapCounts> {
        let (_, map) = self
            .maps
            .iter()
            .find(|(name, _)| *name == MAP_LOCAL_COUNTS)?;
        let counts = PerCpuArray::<&MapData, u64>::try_from(map).ok()?;
        let sum = |index| {
            counts
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum::<u64>())
                .ok()
        };
        Some(SockmapCounts {
            redirected: sum(LOCAL_REDIRECTED)?,
            left_on_tcp: sum(LOCAL_FELL_BACK)?,
            sockets_joined: sum(LOCAL_JOINED)?,
            sockets_refused: sum(LOCAL_JOIN_FAILED)?,
        })
    }

    /// Every map with its kernel metadata and entry count.
    ///
    /// Cost: one `bpf(BPF_OBJ_GET_INFO_BY_FD)` per map, and counting iterates keys with one
    /// `bpf(BPF_MAP_GET_NEXT_KEY)` syscall per entry. The config sets (destinations, ports,
    /// cgroups, steered ports) hold a handful; the tuple map holds one entry per captured
    /// connection open now (up to its `max_entries`, 64k syscalls at worst, a few tens of
    /// milliseconds). Blocking: call it off the async threads.
    pub fn maps(&self) -> Vec<MapView> {
        let mut views: Vec<MapView> = self
            .maps
            .iter()
            .map(|(name, map)| view(name, map_data(map), &self.maps_dir, count(name, map)))
            .collect();
        let tuple = self.original_dst.map_data();
        let tuple_count = Count::Counted(self.original_dst.entries());
        views.push(view(
            MAP_ORIGINAL_DST_BY_TUPLE,
            Some(tuple),
            &self.maps_dir,
            tuple_count,
        ));
        views.sort_by_key(|v| v.name);
        views
    }
}

/// What the sockmap hop did since its maps were made: messages it moved between an
/// application or a workload and the daemon, those it left on TCP (no peer in the map), sockets that
/// joined the map and those the map refused (full).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SockmapCounts {
    pub redirected: u64,
    pub left_on_tcp: u64,
    pub sockets_joined: u64,
    pub sockets_refused: u64,
}

enum Count {
    Counted(Result<u64, aya::maps::MapError>),
    /// Not counted, and why.
    Not(&'static str),
}

fn view(
    name: &'static str,
    data: Option<&MapData>,
    dir: &std::path::Path,
    count: Count,
) -> MapView {
    let info = data.and_then(|d| d.info().ok());
    let map_type = info
        .as_ref()
        .and_then(|i| i.map_type().ok())
        .map_or_else(|| "unknown".into(), |t| format!("{t:?}"));
    let (entries, entries_note) = match count {
        Count::Counted(Ok(n)) => (Some(n), None),
        Count::Counted(Err(e)) => (None, Some(format!("cannot count: {e}"))),
        Count::Not(why) => (None, Some(why.into())),
    };
    MapView {
        name,
        map_type,
        id: info.as_ref().map(|i| i.id()),
        max_entries: info.as_ref().map(|i| i.max_entries()),
        key_size: info.as_ref().map(|i| i.key_size()),
        value_size: info.as_ref().map(|i| i.value_size()),
        pin: dir.join(name),
        entries,
        entries_note,
    }
}

/// The map handle of the kinds the capture object declares.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::SockMap(d)
        | Map::SockHash(d)
        | Map::PerCpuArray(d)
        | Map::SkStorage(d) => Some(d),
        _ => None,
    }
}

fn count(name: &str, map: &Map) -> Count {
    fn keys<I, K>(keys: I) -> Count
    where
        I: Iterator<Item = Result<K, aya::maps::MapError>>,
    {
        let mut n = 0;
        for key in keys {
            if let Err(e) = key {
                return Count::Counted(Err(e));
            }
            n += 1;
        }
        Count::Counted(Ok(n))
    }
    macro_rules! hash {
        ($k:ty) => {
            match HashMap::<&MapData, $k, u8>::try_from(map) {
                Ok(set) => keys(set.keys()),
                Err(e) => Count::Counted(Err(e)),
            }
        };
    }
    macro_rules! trie {
        ($n:literal) => {
            match LpmTrie::<&MapData, [u8; $n], u8>::try_from(map) {
                Ok(trie) => keys(trie.keys()),
                Err(e) => Count::Counted(Err(e)),
            }
        };
    }
    match name {
        MAP_DESTINATIONS_V4 | MAP_EXCLUDES_V4 => trie!(4),
        MAP_DESTINATIONS_V6 | MAP_EXCLUDES_V6 => trie!(16),
        MAP_PORTS | MAP_STEER_PORTS => hash!(u16),
        MAP_EXEMPT_CGROUPS | MAP_WORKLOAD_CGROUPS => hash!(u64),
        MAP_CONFIG => Count::Not("an array: every slot always exists (slot 0 is the config word)"),
        MAP_PLAINTEXT_LISTENERS | MAP_POD_LISTENERS => {
            Count::Not("a socket array: its keys are all its slots, filled or not")
        }
        MAP_POD_ADDRESSES => match HashMap::<&MapData, IpKey, PodSteer>::try_from(map) {
            Ok(map) => keys(map.keys()),
            Err(e) => Count::Counted(Err(e)),
        },
        MAP_NODE_ADDRESSES => hash!(IpKey),
        MAP_LOCAL_PEERS => Count::Not("a socket hash: its sockets cannot be listed from userspace"),
        MAP_LOCAL_SENT => Count::Not(
            "socket-local storage: entries live on the sockets and cannot be listed from userspace",
        ),
        MAP_LOCAL_COUNTS => Count::Not("counters (see sockmap)"),
        MAP_LOCAL_DELIVERIES => hash!(SocketTuple),
        MAP_LOCAL_LAYOUT => Count::Not("an array of one slot: the kernel's offsets"),
        MAP_ORIGINAL_DST_BY_SOCKET => Count::Not(
            "socket-local storage: entries live on the sockets and cannot be listed from userspace",
        ),
        _ => Count::Not("not counted"),
    }
}
