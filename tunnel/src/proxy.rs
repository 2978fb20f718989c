//! The data plane. Outbound takes connections the kernel programs captured and carries each
//! as one HBONE stream over a pooled mTLS connection; inbound serves HBONE from peer daemons
//! and delivers to local workloads.

pub mod copy;
pub mod hbone;
pub mod inbound;
pub mod outbound;
pub mod pool;
mod record_tls_error;
