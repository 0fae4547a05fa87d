//! `pbsfs mount` and `pbsfs umount`.

use std::path::Path;

use crate::cli::MountArgs;
use crate::error::{Error, Result};

pub fn run(_args: &MountArgs, _pbs: Option<&str>) -> Result<i32> {
    Err(Error::InvalidInput("mount: not implemented yet".into()))
}

pub fn umount(_mountpoint: &Path) -> Result<i32> {
    Err(Error::InvalidInput("umount: not implemented yet".into()))
}
