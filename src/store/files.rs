//! How pbsfs creates files and folders in a datastore: the owner of the datastore root,
//! PBS's modes (spec §11.6), and atomic replacement through `*.tmp_XXXXXX` + rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::format::index::INDEX_FILE_MODE;
use crate::util::error::{Error, IoContext, Result};
use crate::util::sys;

/// Who owns what pbsfs creates: the owner of the datastore root (PBS checks and needs
/// backup:backup; one root-owned chunk breaks PBS's GC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub fn of(path: &Path) -> Result<Owner> {
        let md = fs::metadata(path).ctx(path.display())?;
        Ok(Owner {
            uid: md.uid(),
            gid: md.gid(),
        })
    }

    /// Give `file` this owner when we are root and it differs (an unprivileged process
    /// can only create files it owns, which then already match when it owns the store).
    fn apply(&self, file: &File, what: &Path) -> Result<()> {
        if sys::geteuid() != 0 {
            return Ok(());
        }
        let md = file.metadata().ctx(what.display())?;
        if md.uid() != self.uid || md.gid() != self.gid {
            std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
                .ctx(format!("chown {}", what.display()))?;
        }
        Ok(())
    }

    pub fn apply_path(&self, path: &Path) -> Result<()> {
        if sys::geteuid() != 0 {
            return Ok(());
        }
        let md = fs::symlink_metadata(path).ctx(path.display())?;
        if md.uid() != self.uid || md.gid() != self.gid {
            std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
                .ctx(format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

/// `n` random characters from `[A-Za-z0-9]`, as mkstemp uses.
pub fn random_suffix(n: usize) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    bytes
        .iter()
        .map(|b| SET[(*b as usize) % SET.len()] as char)
        .collect()
}

/// Random bytes (index uuids).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b
}

/// Create one folder with `mode` and `owner`; an existing folder is left as it is.
pub fn create_dir(path: &Path, mode: u32, owner: Owner) -> Result<bool> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // Mode and owner through a descriptor of the folder just made, never
            // through a name that could be swapped for a symlink meanwhile.
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .ctx(path.display())?;
            dir.set_permissions(fs::Permissions::from_mode(mode))
                .ctx(path.display())?;
            owner.apply(&dir, path)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(format!("create {}", path.display()), e)),
    }
}

/// Open a new, exclusively created file with `mode` and `owner`.
pub fn create_new(path: &Path, mode: u32, owner: Owner) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    what: path.display().to_string(),
                }
            } else {
                Error::io(format!("create {}", path.display()), e)
            }
        })?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .ctx(path.display())?;
    owner.apply(&file, path)?;
    Ok(file)
}

/// Is `name` a temp file of `TempFile::new(_, stem, ..)`: `<stem>.tmp_` and 6 characters
/// of `random_suffix`'s set (PBS's mkstemp names have the same form)?
pub fn is_temp_name(name: &std::ffi::OsStr, stem: &str) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(stem))
        .and_then(|n| n.strip_prefix(".tmp_"))
        .is_some_and(|sfx| sfx.len() == 6 && sfx.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A temp file next to its target: `<stem>.tmp_XXXXXX` (PBS's naming, so its cleanup and
/// GC recognise it). The file is removed on drop unless it was renamed into place.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// `stem` is the target name with its last extension dropped (`index.json` for
    /// `index.json.blob`, `notes` for `notes`).
    pub fn new(dir: &Path, stem: &str, mode: u32, owner: Owner) -> Result<TempFile> {
        for _ in 0..100 {
            let path = dir.join(format!("{stem}.tmp_{}", random_suffix(6)));
            match create_new(&path, mode, owner) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::AlreadyExists {
            what: format!("every temp name tried for {stem} in {}", dir.display()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("open until persisted");
        f.write_all(data).ctx(self.path.display())
    }

    pub fn sync(&mut self) -> Result<()> {
        let f = self.file.as_mut().expect("open until persisted");
        f.sync_all().ctx(format!("fsync {}", self.path.display()))
    }

    /// Atomically replace `target` with this file.
    pub fn persist(mut self, target: &Path) -> Result<()> {
        self.file.take();
        fs::rename(&self.path, target).ctx(format!(
            "rename {} to {}",
            self.path.display(),
            target.display()
        ))?;
        self.path = PathBuf::new();
        Ok(())
    }

    /// Move this file to `target` only if `target` does not exist yet.
    pub fn persist_new(mut self, target: &Path) -> Result<()> {
        self.file.take();
        match fs::hard_link(&self.path, target) {
            Ok(()) => {
                let _ = fs::remove_file(&self.path);
                self.path = PathBuf::new();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                what: target.display().to_string(),
            }),
            Err(e) => Err(Error::io(format!("link {}", target.display()), e)),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Write `data` to `target` atomically: temp file, optional fsync, rename.
pub fn replace_file(
    target: &Path,
    data: &[u8],
    mode: u32,
    owner: Owner,
    fsync: bool,
) -> Result<()> {
    let dir = target.parent().expect("a file in a folder");
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let stem = name
        .rsplit_once('.')
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .unwrap_or(name);
    let mut tmp = TempFile::new(dir, stem, mode, owner)?;
    tmp.write_all(data)?;
    if fsync {
        tmp.sync()?;
    }
    tmp.persist(target)?;
    if fsync {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// fsync a folder, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx(format!("fsync {}", dir.display()))
}

/// Write an index file the way PBS does: `<name>.tmp_fidx|tmp_didx` next to it, fsync,
/// rename. An index is written once; its folder is fsynced by the caller's final step.
pub fn write_index_file(target: &Path, bytes: &[u8], owner: Owner) -> Result<()> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(target.display(), "not an index file name"))?;
    let (stem, ext) = name
        .rsplit_once('.')
        .ok_or_else(|| Error::invalid(name, "an index name needs an extension"))?;
    let tmp = target.with_file_name(format!("{stem}.tmp_{ext}"));
    let _ = fs::remove_file(&tmp);
    let mut file = create_new(&tmp, INDEX_FILE_MODE, owner)?;
    let res = std::io::Write::write_all(&mut file, bytes)
        .and_then(|_| file.sync_all())
        .ctx(tmp.display())
        .and_then(|_| fs::rename(&tmp, target).ctx(format!("rename {}", tmp.display())));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_is_atomic_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("pbsfs-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let owner = Owner::of(&dir).unwrap();
        let t = dir.join("index.json.blob");
        replace_file(&t, b"one", 0o644, owner, true).unwrap();
        replace_file(&t, b"two", 0o644, owner, false).unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&t).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let tmp = TempFile::new(&dir, "index.json", 0o644, owner).unwrap();
        assert!(tmp
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("index.json.tmp_"));
        assert!(matches!(
            tmp.persist_new(&t),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
