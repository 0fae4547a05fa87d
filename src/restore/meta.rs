//! The metadata of restored entries (owner, mode, extended attributes, ACLs,
//! capabilities, times, `chattr` flags) and the folder steps around them: making a
//! folder, clearing what is in the way with `--overwrite`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::pxar::acl;
use crate::pxar::decoder::Entry;
use crate::pxar::format::{flags_to_chattr, Stat, CHATTR_MASK};
use crate::util::error::{Error, IoContext, Result};
use crate::util::sys;

/// Owner, mode, xattrs, ACLs, capabilities, mtime and `chattr` flags, in that order:
/// chown clears setuid bits and capabilities, chmod after it keeps the bits, the
/// capability goes last of the attributes, then the time; the flags (regular files
/// and folders, a folder's after its content) go very last, as in PBS's extractor,
/// because IMMUTABLE and APPEND refuse any later change.
pub(super) fn set_metadata(place: Place, shown: &Path, e: &Entry, root_user: bool) -> Result<()> {
    let st: &Stat = &e.stat;
    let symlink = st.is_symlink();
    if root_user {
        match place {
            Place::Open(f) => std::os::unix::fs::fchown(f, Some(st.uid), Some(st.gid)),
            Place::Path(at) => std::os::unix::fs::lchown(at, Some(st.uid), Some(st.gid)),
        }
        .ctx(format!("chown {}", shown.display()))?;
    }
    if !symlink {
        let mode = fs::Permissions::from_mode(st.permissions());
        match place {
            Place::Open(f) => f.set_permissions(mode),
            Place::Path(at) => fs::set_permissions(at, mode),
        }
        .ctx(format!("chmod {}", shown.display()))?;
    }
    let mut attrs: Vec<(Vec<u8>, Vec<u8>)> = e.xattrs.clone();
    if let Some(v) = acl::access_xattr(st, &e.acl) {
        attrs.push((b"system.posix_acl_access".to_vec(), v));
    }
    if let Some(v) = acl::default_xattr(&e.acl) {
        attrs.push((b"system.posix_acl_default".to_vec(), v));
    }
    if let Some(caps) = &e.fcaps {
        attrs.push((b"security.capability".to_vec(), caps.clone()));
    }
    for (name, value) in &attrs {
        let set = match place {
            Place::Open(f) => sys::set_xattr_fd(f, name, value),
            Place::Path(at) => sys::set_xattr(at, name, value),
        };
        if let Err(err) = set {
            // What the file system or our rights refuse is reported, not fatal.
            log::warn!(
                "{}: extended attribute {}: {err}",
                shown.display(),
                String::from_utf8_lossy(name)
            );
        }
    }
    match place {
        Place::Open(f) => sys::set_times_fd(f, st.mtime_secs, st.mtime_nanos),
        Place::Path(at) => sys::set_times(at, st.mtime_secs, st.mtime_nanos),
    }
    .ctx(format!("set times of {}", shown.display()))?;
    if st.flags != 0 && (st.is_regular() || st.is_dir()) {
        let want = flags_to_chattr(st.flags);
        let applied = match place {
            Place::Open(f) => apply_chattr(f, want, CHATTR_MASK),
            Place::Path(at) => open_for_flags(at).and_then(|f| apply_chattr(&f, want, CHATTR_MASK)),
        };
        if let Err(err) = applied {
            // What the file system or our rights refuse is reported, not fatal.
            log::warn!("{}: file attributes (chattr): {err}", shown.display());
        }
    }
    Ok(())
}

/// Where an entry's metadata goes: a regular file or folder through its open
/// descriptor (no path walked again; a folder's parent may be closed by then), or any
/// other entry by its path.
#[derive(Clone, Copy)]
pub(super) enum Place<'a> {
    Open(&'a File),
    Path(&'a Path),
}

/// A restored regular file or folder opened for the flag ioctls (never a symlink).
fn open_for_flags(at: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(at)
}

/// Set the inode flags in `mask` to those of `want`, keeping the file's other flags
/// (ext4's EXTENTS, ...), as PBS's `apply_chattr` does; nothing is written when they
/// already match.
pub(super) fn apply_chattr(file: &File, want: u32, mask: u32) -> io::Result<()> {
    let current = sys::get_inode_flags(file)?;
    let new = (want & mask) | (current & !mask);
    if new == current {
        return Ok(());
    }
    sys::set_inode_flags(file, new)
}

/// A folder at `at`: made, or with `overwrite` an existing folder reused (never a
/// symlink to one).
pub(super) fn make_dir(at: &Path, shown: &Path, overwrite: bool) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(at) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && overwrite => {
            match fs::symlink_metadata(at) {
                Ok(md) if md.is_dir() => Ok(()),
                _ => {
                    remove_existing(at, shown)?;
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(at)
                        .ctx(format!("create {}", shown.display()))
                }
            }
        }
        Err(e) => Err(Error::io(format!("create {}", shown.display()), e)),
    }
}

/// With `--overwrite`, what is in the way of a new entry goes (a folder only when
/// empty: nothing is deleted recursively).
pub(super) fn remove_existing(at: &Path, shown: &Path) -> Result<()> {
    match fs::symlink_metadata(at) {
        Ok(md) if md.is_dir() => fs::remove_dir(at).ctx(format!("remove {}", shown.display())),
        Ok(_) => fs::remove_file(at).ctx(format!("remove {}", shown.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(shown.display(), e)),
    }
}
