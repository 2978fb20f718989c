//! The kernel section: what capture needs of this host, judged by the same functions
//! `tunnel run` calls before it attaches anything.

use super::{
    at,
    report::{Lines, Report, Section},
};
use crate::{
    cgroup::{self, CgroupError},
    config::{Config, Located},
    ebpf, kernel,
    mounts::MountTable,
    proxy::inbound::nonlocal_bind,
};

pub(super) fn check(report: &mut Report, config: &Config) {
    let mut lines = Lines::new(report, Section::Kernel);
    let mounts = match MountTable::read() {
        Ok(mounts) => mounts,
        Err(e) => {
            // Every check below reads it; without it none can be judged.
            lines.fail(
                "mounts",
                format!("cannot read /proc/self/mounts: {e}"),
                "run tunnel check where tunnel run runs (same host, same mount namespace)".into(),
            );
            return;
        }
    };
    requirements(&mut lines, &mounts);
    sockmap(&mut lines, config);
    nonlocal_bind(&mut lines);
    cgroup_exists(
        &mut lines,
        config,
        "capture cgroup",
        &config.capture.cgroup,
        &mounts,
    );
    for workload in &config.workloads {
        if let Some(located) = &workload.cgroup {
            let check = format!("workload {} cgroup", workload.name);
            cgroup_exists(&mut lines, config, &check, located, &mounts);
        }
    }
    bpf_dir(&mut lines, config, &mounts);
}

fn requirements(lines: &mut Lines<'_>, mounts: &MountTable) {
    let missing = kernel::check(mounts);
    if missing.is_empty() {
        lines.ok(
            "requirements",
            "kernel 5.15 or later, BTF, cgroup v2, and the capabilities to load and attach the \
             capture programs (CAP_BPF or CAP_SYS_ADMIN, CAP_NET_ADMIN) are all present",
        );
    }
    for m in missing {
        let hint = match m.what {
            "kernel" => "upgrade the kernel to 5.15 or later",
            "BTF" => {
                "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels are)"
            }
            "cgroup v2" => {
                "mount cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup) or boot with \
                 systemd.unified_cgroup_hierarchy=1"
            }
            // The capabilities are this process's: they say something only when check runs
            // as the daemon does.
            _ => {
                "run tunnel check as tunnel run runs (root, or with CAP_BPF CAP_NET_ADMIN \
                 CAP_PERFMON): the capabilities checked are this process's"
            }
        };
        lines.fail(m.what, m.detail, hint.into());
    }
}

/// Whether this kernel can carry the hop between applications and the daemon through a
/// sockmap (`[capture] sockmap`): a socket hash map and an `sk_msg` program, probed by
/// loading the smallest of each. Without them `tunnel run` warns and keeps loopback TCP.
fn sockmap(lines: &mut Lines<'_>, config: &Config) {
    use aya::{
        maps::MapType,
        programs::ProgramType,
        sys::{is_map_supported, is_program_supported},
    };
    let map = is_map_supported(MapType::SockHash).map_err(|e| e.to_string());
    let program = is_program_supported(ProgramType::SkMsg).map_err(|e| e.to_string());
    let check = "sockmap";
    let wanted = if config.capture.sockmap {
        "[capture] sockmap = true"
    } else {
        "[capture] sockmap is off"
    };
    match (map, program) {
        (Ok(true), Ok(true)) => {
            let bound = ebpf::bound_in_force(&ebpf::receiver_unread_count());
            lines.ok(
                check,
                format!("the kernel has socket hash maps and sk_msg programs; {bound} ({wanted})"),
            );
        }
        (map, program) => {
            let why = match (map, program) {
                (Err(e), _) | (_, Err(e)) => format!("cannot probe: {e}"),
                (Ok(false), _) => "no socket hash maps (BPF_MAP_TYPE_SOCKHASH)".to_string(),
                _ => "no sk_msg programs (BPF_PROG_TYPE_SK_MSG)".to_string(),
            };
            let message =
                format!("{why}: applications and the daemon stay on loopback TCP ({wanted})");
            if config.capture.sockmap {
                lines.warn(
                    check,
                    message,
                    "build the kernel with CONFIG_BPF_STREAM_PARSER=y and CONFIG_NET_SOCK_MSG=y,                      or set [capture] sockmap = false to silence this"
                        .into(),
                );
            } else {
                lines.ok(check, message);
            }
        }
    }
}

fn nonlocal_bind(lines: &mut Lines<'_>) {
    match nonlocal_bind::set_sysctls() {
        Ok(set) if set.is_empty() => lines.ok(
            "nonlocal bind",
            "net.ipv4.ip_nonlocal_bind and net.ipv6.ip_nonlocal_bind are 0: binding to a \
             destination proves it is this host's",
        ),
        Ok(set) => lines.fail(
            "nonlocal bind",
            format!(
                "{} set: tunnel run refuses to start (it proves a destination is this host's by \
                 binding to it, which this makes succeed for any address)",
                set.join(" and ")
            ),
            format!(
                "{}, and remove the setting from /etc/sysctl.conf and /etc/sysctl.d",
                set.iter()
                    .map(|name| format!("sysctl -w {name}=0"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Err(e) => lines.fail(
            "nonlocal bind",
            format!("cannot read /proc/sys/net/ipv4/ip_nonlocal_bind: {e}"),
            "tunnel run refuses every CONNECT while it cannot read them; check /proc/sys is mounted"
                .into(),
        ),
    }
}

fn cgroup_exists(
    lines: &mut Lines<'_>,
    config: &Config,
    check: &str,
    located: &Located<std::path::PathBuf>,
    mounts: &MountTable,
) {
    let path = located.value.display();
    match cgroup::open(&located.value, mounts) {
        Ok(dir) => lines.ok(
            check,
            format!("{path} is a cgroup v2 directory (id {})", dir.id),
        ),
        Err(e) => {
            let hint = match &e {
                CgroupError::Missing { .. } => format!(
                    "create it (mkdir {path}) and move the processes into it, or fix {}",
                    at(config, &located.site)
                ),
                _ => format!(
                    "point {} at a directory of the cgroup v2 hierarchy",
                    at(config, &located.site)
                ),
            };
            lines.fail(check, crate::errors::chain(&e), hint);
        }
    }
}

fn bpf_dir(lines: &mut Lines<'_>, config: &Config, mounts: &MountTable) {
    let located = &config.capture.bpf_dir;
    match ebpf::check_bpf_dir(&located.value, mounts) {
        // Also true below an unmounted /sys/fs/bpf, which tunnel run mounts itself.
        Ok(()) => lines.ok(
            "bpf_dir",
            format!(
                "{} can hold the pinned programs and maps (bpffs)",
                located.value.display()
            ),
        ),
        Err(e) => lines.fail(
            "bpf_dir",
            crate::errors::chain(&e),
            format!(
                "mount bpffs (mount -t bpf bpf /sys/fs/bpf) or set {} to a directory below /sys/fs/bpf",
                at(config, &located.site)
            ),
        ),
    }
}
