//! tunnel: transparent mutual TLS for east-west TCP.
//!
//! The kernel programs (`tunnel-ebpf`) catch outbound connects and hand them to this daemon,
//! which carries them over HBONE (HTTP/2 CONNECT over mTLS) to the daemon on the destination
//! host. See ARCHITECTURE.md for the map of modules, ports, programs and maps.

#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod ca;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod drain;
pub mod duration;
pub mod ebpf;
pub mod errors;
pub mod identity;
pub mod kernel;
pub mod logging;
pub mod mounts;
pub mod netns;
pub mod pods;
pub mod policy;
pub mod proxy;
pub mod sys;
pub mod systemd;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod tls;
