//! Where a CA and an issued certificate live on disk, and writing them safely.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::CaError;
use crate::identity::CertSummary;

/// The files of a CA directory.
#[derive(Clone, Debug)]
pub struct CaFiles {
    pub dir: PathBuf,
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub intermediate_cert: PathBuf,
    pub intermediate_key: PathBuf,
    pub bundle: PathBuf,
    /// The intermediate's CRL, empty at first (`tunnel ca revoke` extends it).
    pub crl: PathBuf,
}

/// The files of an issued certificate.
#[derive(Clone, Debug)]
pub struct IssuedFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.into(),
            root_cert: dir.join("root.pem"),
            root_key: dir.join("root.key"),
            intermediate_cert: dir.join("intermediate.pem"),
            intermediate_key: dir.join("intermediate.key"),
            bundle: dir.join("bundle.pem"),
            crl: dir.join("crl.pem"),
        }
    }

    pub(super) fn prepare(&self, force: bool) -> Result<(), CaError> {
        prepare(
            &self.dir,
            &[
                &self.root_cert,
                &self.root_key,
                &self.intermediate_cert,
                &self.intermediate_key,
                &self.bundle,
                &self.crl,
            ],
            force,
        )
    }

    pub(super) fn write_key(&self, path: &Path, pem: &str) -> Result<(), CaError> {
        write_key_file(path, pem)
    }

    pub(super) fn write_public(&self, path: &Path, pem: &str) -> Result<(), CaError> {
        write_public_file(path, pem)
    }
}

impl IssuedFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.into(),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    pub(super) fn prepare(&self, force: bool) -> Result<(), CaError> {
        prepare(&self.dir, &[&self.cert, &self.key], force)
    }
}

/// Creates the directory (0700) and refuses to clobber files unless forced.
fn prepare(dir: &Path, files: &[&PathBuf], force: bool) -> Result<(), CaError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::Write {
            path: dir.into(),
            source,
        })?;
    for file in files {
        if file.exists() {
            if !force {
                return Err(CaError::Exists {
                    path: (*file).clone(),
                });
            }
            fs::remove_file(file).map_err(|source| CaError::Write {
                path: (*file).clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// A private key: created with mode 0600, so it is never readable by others.
pub(super) fn write_key_file(path: &Path, pem: &str) -> Result<(), CaError> {
    write(path, pem, 0o600)
}

pub(super) fn write_public_file(path: &Path, pem: &str) -> Result<(), CaError> {
    write(path, pem, 0o644)
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let error = |source| CaError::Write {
        path: path.into(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)
}

/// Replaces `path` so that a reader (the daemon watches the directory and reloads on every
/// change) sees the old file or the new one, never half of one: the text goes to a temporary
/// file in the same directory (rename is atomic within one file system only), is flushed to
/// disk, and is renamed over `path`. Public (0644, whatever the umask): peers read it.
pub(super) fn replace_public_file(path: &Path, contents: &str) -> Result<(), CaError> {
    let error = |source| CaError::Write {
        path: path.into(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        // The rename itself survives a crash once the directory is synced too.
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(error)
}

pub(super) fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|e| CaError::Read {
        path: path.into(),
        detail: e.to_string(),
    })
}

/// What the intermediate certificate `pem`, read from `path`, says.
pub(super) fn intermediate_summary(path: &Path, pem: &str) -> Result<CertSummary, CaError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let error = |detail: String| CaError::Read {
        path: path.into(),
        detail,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| error(e.to_string()))?;
    CertSummary::parse(der.as_ref()).map_err(|e| error(e.to_string()))
}
