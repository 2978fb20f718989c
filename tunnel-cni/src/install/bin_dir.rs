//! The CNI bin dir: the plugin binary copied in (first, on install) and removed (last, on
//! uninstall).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{InstallError, io_error};
use crate::{conflist::PLUGIN_TYPE, files};

/// Copies `exe` into `bin_dir` under the plugin's type name; where it went.
pub(super) fn copy_in(exe: &Path, bin_dir: &Path) -> Result<PathBuf, InstallError> {
    let binary = fs::read(exe).map_err(io_error("read", exe))?;
    let target = bin_dir.join(PLUGIN_TYPE);
    files::replace(&target, &binary, 0o755).map_err(io_error("write", &target))?;
    Ok(target)
}

/// Removes the plugin from `bin_dir`; the path removed, or `None` if it was not there.
pub(super) fn remove(bin_dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    let binary = bin_dir.join(PLUGIN_TYPE);
    match fs::remove_file(&binary) {
        Ok(()) => Ok(Some(binary)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("remove", &binary)(e)),
    }
}
