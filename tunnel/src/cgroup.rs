//! cgroup v2 directories: where the hierarchy is mounted, what a configured path really is,
//! the id the kernel programs see for it, and which cgroup this daemon runs in.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::mounts::MountTable;

/// A directory of the cgroup v2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupDir {
    pub path: PathBuf,
    /// What `bpf_get_current_cgroup_id()` returns for tasks in it: on cgroup v2 (kernfs) the
    /// directory's inode number is the cgroup id.
    pub id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mounts); tunnel \
         captures by cgroup v2, mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` \
         or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
    #[error("{path} is not a cgroup v2 directory: it is on a {fstype} filesystem{hint}")]
    NotCgroup2 {
        path: PathBuf,
        fstype: String,
        hint: String,
    },
    #[error("cgroup {path} does not exist or is unreadable")]
    Missing { path: PathBuf, source: io::Error },
    #[error("cannot read this process's cgroup from /proc/self/cgroup: {0}")]
    OwnCgroup(String),
}

/// Where the cgroup v2 hierarchy is mounted (e.g. `/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root(mounts: &MountTable) -> Result<PathBuf, CgroupError> {
    mounts
        .first_of_type("cgroup2")
        .map(|m| m.target.clone())
        .ok_or(CgroupError::NoCgroup2)
}

/// Opens a configured cgroup path, refusing anything that is not a cgroup v2 directory with
/// a message that says what it is and where cgroup v2 lives instead.
pub fn open(path: &Path, mounts: &MountTable) -> Result<CgroupDir, CgroupError> {
    let metadata = fs::metadata(path).map_err(|source| CgroupError::Missing {
        path: path.into(),
        source,
    })?;
    let fstype = mounts
        .containing(path)
        .map_or("unknown", |m| m.fstype.as_str());
    if fstype != "cgroup2" || !metadata.is_dir() {
        let hint = match cgroup2_root(mounts) {
            Ok(root) => format!("; the cgroup v2 hierarchy is mounted at {}", root.display()),
            Err(_) => "; no cgroup v2 hierarchy is mounted on this host".to_string(),
        };
        return Err(CgroupError::NotCgroup2 {
            path: path.into(),
            fstype: fstype.into(),
            hint,
        });
    }
    Ok(CgroupDir {
        path: path.into(),
        id: metadata.ino(),
    })
}

/// Directories searched at most for this process's cgroup when /proc/self/cgroup does not
/// name it (a container's own cgroup namespace).
const OWN_SEARCH_LIMIT: usize = 100_000;

/// The cgroup v2 directory this process belongs to: the `0::` line of /proc/self/cgroup,
/// under the mounted hierarchy. In a cgroup namespace of its own (a container's) that line
/// is relative to the namespace's root, not to the mounted host hierarchy, so the directory
/// it names is checked to hold this process, and otherwise the hierarchy is searched for the
/// one that does: the kernel programs exempt this process by the id of its real cgroup.
pub fn own(mounts: &MountTable) -> Result<CgroupDir, CgroupError> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| CgroupError::OwnCgroup(e.to_string()))?;
    let relative = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| CgroupError::OwnCgroup("no cgroup v2 (0::) entry".into()))?;
    let root = cgroup2_root(mounts)?;
    let named = root.join(relative.trim_start_matches('/'));
    let pid = std::process::id();
    if holds(&named, pid) {
        return open(&named, mounts);
    }
    let found = find_holding(&root, pid).ok_or_else(|| {
        CgroupError::OwnCgroup(format!(
            "/proc/self/cgroup names {relative}, which does not hold this process (pid {pid}), and no cgroup under {} does",
            root.display()
        ))
    })?;
    open(&found, mounts)
}

/// Whether `dir`'s `cgroup.procs` lists `pid`.
fn holds(dir: &Path, pid: u32) -> bool {
    fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|line| line.trim().parse() == Ok(pid)))
}

/// The cgroup under `root` whose `cgroup.procs` lists `pid` (breadth first, bounded).
fn find_holding(root: &Path, pid: u32) -> Option<PathBuf> {
    let mut queue = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        if holds(&dir, pid) {
            return Some(dir);
        }
        seen += 1;
        if seen >= OWN_SEARCH_LIMIT {
            return None;
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                queue.push_back(entry.path());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> MountTable {
        MountTable::read().expect("read /proc/self/mounts")
    }

    /// Needs cgroup v2 (as `tunnel run` does, and CI has): fails, never passes unchecked,
    /// on a host without it.
    #[test]
    fn own_cgroup_is_a_cgroup2_directory() {
        let mounts = mounts();
        let root = cgroup2_root(&mounts)
            .unwrap_or_else(|e| panic!("this test needs a host with cgroup v2 mounted: {e}"));
        let own = own(&mounts).expect("own cgroup");
        assert!(own.path.starts_with(root));
        assert_ne!(own.id, 0);
    }

    /// What `own` falls back to in a cgroup namespace of its own (tests/pods.rs runs the
    /// daemon in one): the search from the root finds the cgroup /proc/self/cgroup names.
    #[test]
    fn the_hierarchy_is_searched_for_the_cgroup_that_holds_a_process() {
        let mounts = mounts();
        let root = cgroup2_root(&mounts).unwrap();
        let own = own(&mounts).expect("own cgroup");
        assert_eq!(find_holding(&root, std::process::id()), Some(own.path));
        assert_eq!(
            find_holding(&root, u32::MAX),
            None,
            "no process has that pid"
        );
    }

    #[test]
    fn refuses_a_path_that_is_not_cgroup2() {
        let err = open(Path::new("/proc"), &mounts()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("/proc is not a cgroup v2 directory: it is on a proc filesystem"),
            "{message}"
        );
    }
}
