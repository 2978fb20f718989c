//! In-process tests of the security-critical core, without root: the pool, the inbound
//! side's caps and refusals, the copy loop and the certificate verifiers, each over real
//! sockets on 127.0.0.1 with certificates from the project's own CA. Each test prints the
//! figure it measured (`cargo test -p tunnel --lib proxy::tests -- --nocapture`).

mod copy;
mod inbound;
mod kit;
mod metrics;
mod pool;
mod verify;
