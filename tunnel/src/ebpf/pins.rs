//! The pin directory: where maps and links live on bpffs, how a new run takes over from an
//! earlier one, and how `tunnel uninstall` removes everything.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::programs::links::{FdLink, PinnedLink};
use tunnel_common::MAP_LAYOUT_VERSION;

use super::EbpfError;
use crate::{errors, mounts::MountTable, sys};

/// Where bpffs is conventionally mounted; the only place we mount it ourselves.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The pin directory of one run.
pub struct Layout {
    maps_dir: PathBuf,
    links_root: PathBuf,
    generation: String,
}

/// What [`uninstall`] removed.
#[derive(Debug, Default)]
pub struct Uninstalled {
    pub links: usize,
    pub maps: usize,
}

impl Layout {
    /// Makes sure `bpf_dir` is on bpffs (mounting it at /sys/fs/bpf if nothing is mounted
    /// there yet) and creates this run's directories.
    pub fn prepare(bpf_dir: &Path) -> Result<Self, EbpfError> {
        ensure_bpffs(bpf_dir)?;
        let generation = generation_name();
        let layout = Self {
            maps_dir: bpf_dir.join(format!("maps-v{MAP_LAYOUT_VERSION}")),
            links_root: bpf_dir.join("links"),
            generation,
        };
        for dir in [
            &layout.maps_dir,
            &layout.links_root,
            &layout.generation_dir(),
        ] {
            fs::create_dir_all(dir).map_err(|source| EbpfError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(layout)
    }

    pub fn map_pin(&self, name: &str) -> PathBuf {
        self.maps_dir.join(name)
    }

    pub fn maps_dir(&self) -> &Path {
        &self.maps_dir
    }

    /// Where this run pins `program`'s link.
    pub fn link_pin(&self, program: &str) -> PathBuf {
        self.generation_dir().join(program)
    }

    pub fn pin_link(&self, program: &str, link: FdLink) -> Result<(), EbpfError> {
        let path = self.link_pin(program);
        link.pin(&path)
            .map(drop)
            .map_err(|source| EbpfError::Pin { path, source })
    }

    /// Detaches the links of every other run, and drops maps of other layouts (which only
    /// those links used). Returns the generations retired.
    pub fn retire_older_runs(&self) -> Result<Vec<String>, EbpfError> {
        let mut retired = Vec::new();
        for entry in read_dir(&self.links_root)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != self.generation {
                remove_links(&entry.path())?;
                retired.push(name);
            }
        }
        let bpf_dir = self.maps_dir.parent().expect("maps dir is inside bpf_dir");
        for entry in read_dir(bpf_dir)? {
            let path = entry.path();
            let is_other_layout =
                entry.file_name().to_string_lossy().starts_with("maps-v") && path != self.maps_dir;
            if is_other_layout {
                remove_maps(&path)?;
            }
        }
        Ok(retired)
    }

    /// Undoes a failed install: detaches whatever this run attached so far.
    pub fn abandon(&self) {
        if let Err(e) = remove_links(&self.generation_dir()) {
            tracing::warn!(
                error = %errors::chain(&e),
                "could not remove the links of a failed install"
            );
        }
    }

    fn generation_dir(&self) -> PathBuf {
        self.links_root.join(&self.generation)
    }
}

/// Removes all links (detaching the programs) and all maps under `bpf_dir`.
pub fn uninstall(bpf_dir: &Path) -> Result<Uninstalled, EbpfError> {
    let mut removed = Uninstalled::default();
    if !bpf_dir.exists() {
        return Ok(removed);
    }
    // Links first: once they are gone nothing captures, so removing maps cannot strand a
    // program without its state.
    let links_root = bpf_dir.join("links");
    if links_root.exists() {
        for entry in read_dir(&links_root)? {
            removed.links += remove_links(&entry.path())?;
        }
        remove_dir(&links_root)?;
    }
    // Pods' steering links (one per registered pod's namespace).
    let pods = bpf_dir.join("pods");
    if pods.exists() {
        removed.links += remove_links(&pods)?;
    }
    for entry in read_dir(bpf_dir)? {
        if entry.file_name().to_string_lossy().starts_with("maps-v") {
            removed.maps += remove_maps(&entry.path())?;
        }
    }
    remove_dir(bpf_dir)?;
    Ok(removed)
}

/// Unpins every link in a generation directory; dropping the last reference detaches it.
fn remove_links(generation_dir: &Path) -> Result<usize, EbpfError> {
    let mut count = 0;
    for entry in read_dir(generation_dir)? {
        let path = entry.path();
        let link = PinnedLink::from_pin(&path).map_err(|source| EbpfError::Retire {
            path: path.clone(),
            source,
        })?;
        let link: FdLink = link.unpin().map_err(|source| EbpfError::Remove {
            path: path.clone(),
            source,
        })?;
        drop(link);
        count += 1;
    }
    remove_dir(generation_dir)?;
    Ok(count)
}

fn remove_maps(dir: &Path) -> Result<usize, EbpfError> {
    let mut count = 0;
    for entry in read_dir(dir)? {
        let path = entry.path();
        fs::remove_file(&path).map_err(|source| EbpfError::Remove { path, source })?;
        count += 1;
    }
    remove_dir(dir)?;
    Ok(count)
}

/// How `bpf_dir` gets onto bpffs.
enum Bpffs {
    /// It is on bpffs already.
    Mounted,
    /// Nothing is mounted at /sys/fs/bpf and `bpf_dir` is below it: mount bpffs there.
    MountRoot,
}

/// Whether pins can live in `bpf_dir`, without changing anything: the start checks this
/// with the config, before it binds or attaches anything.
pub fn check_bpf_dir(bpf_dir: &Path, mounts: &MountTable) -> Result<(), EbpfError> {
    bpffs(bpf_dir, mounts).map(drop)
}

fn bpffs(bpf_dir: &Path, mounts: &MountTable) -> Result<Bpffs, EbpfError> {
    let fstype = mounts
        .containing(bpf_dir)
        .map_or("unknown", |m| m.fstype.as_str());
    if fstype == "bpf" {
        return Ok(Bpffs::Mounted);
    }
    let root = Path::new(BPFFS_ROOT);
    let root_unmounted = mounts.containing(root).is_none_or(|m| m.target != root);
    if bpf_dir.starts_with(root) && root_unmounted && root.is_dir() {
        return Ok(Bpffs::MountRoot);
    }
    Err(EbpfError::NotBpffs {
        path: bpf_dir.into(),
        fstype: fstype.into(),
    })
}

fn ensure_bpffs(bpf_dir: &Path) -> Result<(), EbpfError> {
    let mounts = MountTable::read().map_err(EbpfError::Mounts)?;
    if let Bpffs::MountRoot = bpffs(bpf_dir, &mounts)? {
        sys::mount_bpffs(Path::new(BPFFS_ROOT)).map_err(|source| EbpfError::MountBpffs {
            path: BPFFS_ROOT.into(),
            source,
        })?;
        tracing::info!(path = BPFFS_ROOT, "mounted bpffs");
    }
    Ok(())
}

/// Unique per run and sortable: seconds since the epoch, then the pid.
fn generation_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}-{}", std::process::id())
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, EbpfError> {
    let entries = fs::read_dir(dir)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .map_err(|source| EbpfError::Remove {
            path: dir.into(),
            source,
        })?;
    Ok(entries)
}

fn remove_dir(dir: &Path) -> Result<(), EbpfError> {
    fs::remove_dir(dir).map_err(|source| EbpfError::Remove {
        path: dir.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
sysfs /sys sysfs rw 0 0
bpf /sys/fs/bpf bpf rw 0 0
tmpfs /tmp tmpfs rw 0 0
";

    #[test]
    fn pins_must_live_on_bpffs() {
        let mounts = MountTable::parse(MOUNTS);
        check_bpf_dir(Path::new("/sys/fs/bpf/tunnel"), &mounts).unwrap();
        let message = check_bpf_dir(Path::new("/tmp/pins"), &mounts)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/tmp/pins is on a tmpfs filesystem, not bpffs"),
            "{message}"
        );
    }
}
