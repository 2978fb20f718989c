//! tunnel: transparent mutual TLS for east-west TCP.
//!
//! The kernel programs (`tunnel-ebpf`) catch outbound connects and hand them to this daemon,
//! which carries them over HBONE (HTTP/2 CONNECT over mTLS) to the daemon on the destination
//! host. See ARCHITECTURE.md for the map of modules, ports, programs and maps.

pub mod cli;
