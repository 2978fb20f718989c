//! The log targets a filter change may name: the daemon's own modules (events are tagged
//! with the path of the module that emits them), its two streams of their own, and the
//! libraries whose events reach the daemon's logger. A unit test holds [`MODULES`] against
//! the source tree, so a module added without its line here fails the build's tests.

/// Every module of the daemon that is compiled outside tests, as event targets name them.
pub const MODULES: &[&str] = &[
    "tunnel",
    "tunnel::admin",
    "tunnel::admin::capture",
    "tunnel::admin::client",
    "tunnel::admin::config_dump",
    "tunnel::admin::control",
    "tunnel::admin::health",
    "tunnel::admin::logging",
    "tunnel::admin::readiness",
    "tunnel::admin::server",
    "tunnel::admin::serving",
    "tunnel::app",
    "tunnel::app::reload",
    "tunnel::app::runtimes",
    "tunnel::app::upgrade",
    "tunnel::app::wiring",
    "tunnel::ca",
    "tunnel::ca::files",
    "tunnel::ca::leaf",
    "tunnel::ca::revoke",
    "tunnel::ca::revoke::parse",
    "tunnel::cgroup",
    "tunnel::check",
    "tunnel::check::certificates",
    "tunnel::check::chain",
    "tunnel::check::crl",
    "tunnel::check::host",
    "tunnel::check::issuer",
    "tunnel::check::leaf",
    "tunnel::check::owner",
    "tunnel::check::report",
    "tunnel::check::trust",
    "tunnel::cli",
    "tunnel::cli::ca",
    "tunnel::cli::check",
    "tunnel::cli::completions",
    "tunnel::cli::idle",
    "tunnel::cli::log_level",
    "tunnel::cli::manpages",
    "tunnel::cli::pod",
    "tunnel::cli::probe",
    "tunnel::cli::run",
    "tunnel::cli::status",
    "tunnel::cli::uninstall",
    "tunnel::config",
    "tunnel::config::api_server",
    "tunnel::config::build",
    "tunnel::config::build::capture",
    "tunnel::config::build::credentials",
    "tunnel::config::build::limits",
    "tunnel::config::build::listeners",
    "tunnel::config::build::peers",
    "tunnel::config::build::pods",
    "tunnel::config::build::policy",
    "tunnel::config::build::syntax",
    "tunnel::config::build::values",
    "tunnel::config::build::workloads",
    "tunnel::config::env",
    "tunnel::config::error",
    "tunnel::config::raw",
    "tunnel::credentials",
    "tunnel::credentials::expiry",
    "tunnel::credentials::issued",
    "tunnel::credentials::judge",
    "tunnel::credentials::lifetime",
    "tunnel::credentials::snapshot",
    "tunnel::credentials::source",
    "tunnel::drain",
    "tunnel::duration",
    "tunnel::ebpf",
    "tunnel::ebpf::aya_error",
    "tunnel::ebpf::inventory",
    "tunnel::ebpf::local_hop",
    "tunnel::ebpf::maps",
    "tunnel::ebpf::original_dst",
    "tunnel::ebpf::pins",
    "tunnel::ebpf::pod_steering",
    "tunnel::ebpf::queue_migration",
    "tunnel::errors",
    "tunnel::identity",
    "tunnel::identity::pattern",
    "tunnel::identity::svid",
    "tunnel::identity::template",
    "tunnel::kernel",
    "tunnel::logging",
    "tunnel::logging::batched",
    "tunnel::logging::directives",
    "tunnel::logging::fields",
    "tunnel::logging::targets",
    "tunnel::logging::windows",
    "tunnel::mounts",
    "tunnel::netns",
    "tunnel::pods",
    "tunnel::pods::api",
    "tunnel::pods::directory",
    "tunnel::pods::enrol",
    "tunnel::pods::error",
    "tunnel::pods::kube",
    "tunnel::pods::listeners",
    "tunnel::pods::names",
    "tunnel::pods::records",
    "tunnel::pods::services",
    "tunnel::pods::view",
    "tunnel::policy",
    "tunnel::proxy",
    "tunnel::proxy::admission",
    "tunnel::proxy::budget",
    "tunnel::proxy::admission::pre_tls",
    "tunnel::proxy::copy",
    "tunnel::proxy::deliver",
    "tunnel::proxy::destination",
    "tunnel::proxy::hbone",
    "tunnel::proxy::inbound",
    "tunnel::proxy::inbound::connection",
    "tunnel::proxy::inbound::handshake_thread",
    "tunnel::proxy::inbound::live",
    "tunnel::proxy::inbound::nonlocal_bind",
    "tunnel::proxy::inbound::stream",
    "tunnel::proxy::outbound",
    "tunnel::proxy::outbound::connection",
    "tunnel::proxy::outbound::route",
    "tunnel::proxy::plaintext",
    "tunnel::proxy::pool",
    "tunnel::proxy::pool::dial",
    "tunnel::proxy::pool::error",
    "tunnel::proxy::pool::stream",
    "tunnel::proxy::proxy_protocol",
    "tunnel::proxy::read_ahead",
    "tunnel::proxy::record_tls_error",
    "tunnel::proxy::xfcc",
    "tunnel::sys",
    "tunnel::systemd",
    "tunnel::telemetry",
    "tunnel::telemetry::auth",
    "tunnel::telemetry::buffers",
    "tunnel::telemetry::capture",
    "tunnel::telemetry::certificates",
    "tunnel::telemetry::connections",
    "tunnel::telemetry::metrics",
    "tunnel::telemetry::runtime",
    "tunnel::tls",
    "tunnel::tls::aead",
    "tunnel::tls::chain",
    "tunnel::tls::connection_error",
    "tunnel::tls::crl",
    "tunnel::tls::crl::der",
    "tunnel::tls::crl::entries",
    "tunnel::tls::crl::scope",
    "tunnel::tls::crl::signature",
    "tunnel::tls::explain",
    "tunnel::tls::explain::alert",
    "tunnel::tls::explain::certificate",
    "tunnel::tls::explain::faults",
    "tunnel::tls::explain::webpki_errors",
    "tunnel::tls::explain::words",
    "tunnel::tls::material",
    "tunnel::tls::presented",
    "tunnel::tls::provider",
    "tunnel::tls::refusal_kind",
    "tunnel::tls::revocation",
    "tunnel::tls::verify",
];

/// Libraries that log through `tracing` (the daemon installs no bridge for the `log`
/// crate, so rustls, aya, mio and notify never reach its logger). A directive matches
/// every target that starts with its own, so `tower` also covers `tower_http`.
pub const LIBRARIES: &[&str] = &[
    "h2",
    "hyper_util",
    "kube_client",
    "kube_runtime",
    "tower",
    "tower_http",
];

/// Whether `target` may be named in a filter change.
pub fn known(target: &str) -> bool {
    target == super::ACCESS
        || target == super::AUTH
        || MODULES.contains(&target)
        || LIBRARIES.contains(&target)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        path::{Path, PathBuf},
    };

    use super::*;

    /// The modules declared by `file` (a module's source) that are not `#[cfg(test)]`, with
    /// the file each lives in, recursively.
    fn declared(module: &str, file: &Path, dir: &Path, found: &mut BTreeSet<String>) {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            let Some(name) = ["mod ", "pub mod ", "pub(crate) mod ", "pub(super) mod "]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix))
                .and_then(|rest| rest.strip_suffix(';'))
            else {
                continue;
            };
            let test_only = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with("#["))
                .any(|l| l.contains("cfg(test)"));
            if test_only {
                continue;
            }
            let path = format!("{module}::{name}");
            let child: PathBuf = dir.join(format!("{name}.rs"));
            found.insert(path.clone());
            declared(&path, &child, &dir.join(name), found);
        }
    }

    #[test]
    fn every_module_of_the_daemon_is_a_known_target_and_no_other() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = BTreeSet::from(["tunnel".to_string()]);
        declared("tunnel", &src.join("lib.rs"), &src, &mut found);
        let listed: BTreeSet<String> = MODULES.iter().map(|m| m.to_string()).collect();
        let missing: Vec<_> = found.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&found).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "logging::targets::MODULES: add {missing:?}, remove {stale:?}"
        );
    }

    #[test]
    fn the_streams_and_libraries_are_known_and_prefixes_are_not() {
        for target in [
            "tunnel::access",
            "tunnel::auth",
            "h2",
            "kube_client",
            "tunnel::proxy::inbound",
        ] {
            assert!(known(target), "{target}");
        }
        for target in [
            "tunnel::pro",
            "tunnel::access::x",
            "rustls",
            "h",
            "",
            "Tunnel",
        ] {
            assert!(!known(target), "{target}");
        }
    }
}
