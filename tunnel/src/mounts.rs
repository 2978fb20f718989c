//! What is mounted where, from `/proc/self/mounts`: used to find the cgroup v2 hierarchy and
//! the BPF filesystem, and to tell the operator precisely what a path sits on.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// One line of `/proc/self/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
}

/// The mount table of this process's mount namespace.
#[derive(Clone, Debug)]
pub struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    pub fn read() -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string("/proc/self/mounts")?))
    }

    pub fn parse(text: &str) -> Self {
        let mounts = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let source = unescape(fields.next()?);
                let target = PathBuf::from(unescape(fields.next()?));
                let fstype = fields.next()?.to_string();
                Some(Mount {
                    source,
                    target,
                    fstype,
                })
            })
            .collect();
        Self { mounts }
    }

    /// The first mount of a filesystem type, e.g. `cgroup2`.
    pub fn first_of_type(&self, fstype: &str) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.fstype == fstype)
    }

    /// The mount a path lives on: the last-mounted among those whose target is a prefix of
    /// the path (later mounts shadow earlier ones on the same target).
    pub fn containing(&self, path: &Path) -> Option<&Mount> {
        let depth = |m: &Mount| m.target.components().count();
        let mut best: Option<&Mount> = None;
        for mount in self.mounts.iter().filter(|m| path.starts_with(&m.target)) {
            if best.is_none_or(|b| depth(mount) >= depth(b)) {
                best = Some(mount);
            }
        }
        best
    }
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = &field[i + 1..i + 4];
            if let Ok(value) = u8::from_str_radix(octal, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,nosuid 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
bpf /sys/fs/bpf bpf rw 0 0
/dev/vda /srv/with\\040space ext4 rw 0 0
";

    #[test]
    fn finds_cgroup2_in_a_hybrid_layout() {
        let table = MountTable::parse(HYBRID);
        let cg2 = table.first_of_type("cgroup2").unwrap();
        assert_eq!(cg2.target, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn names_the_filesystem_under_a_path() {
        let table = MountTable::parse(HYBRID);
        let mount = table
            .containing(Path::new("/sys/fs/cgroup/frontend"))
            .unwrap();
        assert_eq!(mount.fstype, "tmpfs");
        let mount = table
            .containing(Path::new("/sys/fs/cgroup/unified/frontend"))
            .unwrap();
        assert_eq!(mount.fstype, "cgroup2");
        let mount = table.containing(Path::new("/sys/fs/bpf/tunnel")).unwrap();
        assert_eq!(mount.fstype, "bpf");
    }

    #[test]
    fn unescapes_octal_sequences() {
        let table = MountTable::parse(HYBRID);
        assert!(table.containing(Path::new("/srv/with space/x")).is_some());
    }
}
