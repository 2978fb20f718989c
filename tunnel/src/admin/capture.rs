//! `/debug/capture`: what the daemon installed in the kernel, from the handles it kept.

use std::path::PathBuf;

use serde::Serialize;

use crate::ebpf::{CaptureState, MapView, ProgramView, SockmapCounts};

#[derive(Serialize)]
pub struct View {
    /// `false` when this process installed nothing (tests); the rest is then empty.
    pub installed: bool,
    pub programs: Vec<ProgramView>,
    /// Programs whose link pin has gone: detached, not capturing.
    pub detached: Vec<&'static str>,
    pub maps_dir: Option<PathBuf>,
    pub maps: Vec<MapView>,
    /// Messages between applications or workloads and the daemon that the sockmap hop
    /// moved, and those it left on TCP, since the maps were made (`[capture] sockmap`).
    pub sockmap: Option<SockmapCounts>,
}

/// Blocking (counts map entries, see [`CaptureState::maps`]).
pub fn view(capture: Option<&CaptureState>) -> View {
    match capture {
        Some(capture) => View {
            installed: true,
            programs: capture.programs().to_vec(),
            detached: capture.missing_links(),
            maps_dir: Some(capture.maps_dir().clone()),
            maps: capture.maps(),
            sockmap: capture.sockmap_counts(),
        },
        None => View {
            installed: false,
            programs: Vec::new(),
            detached: Vec::new(),
            maps_dir: None,
            maps: Vec::new(),
            sockmap: None,
        },
    }
}
