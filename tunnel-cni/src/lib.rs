//! What tunnel-cni reads from the container runtime (the network config on stdin, `CNI_ARGS`)
//! and the error result it answers with: a library of its own so the fuzz targets (`fuzz/`)
//! reach the same code the plugin runs. The plugin and the installer are the binary
//! (`main.rs`).

pub mod args;
pub mod config;
pub mod error;
