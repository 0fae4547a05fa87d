//! The datastore root opened once, and every read of a file or folder inside the store
//! made relative to it (spec §11.9, hostile content). Anyone with the `backup` user's
//! rights can plant files in a PBS store, so: no symlink is followed in any component
//! and nothing outside the root is reached (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`); only regular files are read, opened `O_NONBLOCK` (a FIFO
//! never blocks) and checked with `fstat`; a file's size is checked against what its
//! format allows before a byte of it is read.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::store::files::Owner;
use crate::store::format::index::{Index, INDEX_HEADER_SIZE};
use crate::util::error::{CorruptKind, Error, IoContext, Result};
use crate::util::sys::{self, EntryType, StatAt};

/// Index files larger than this are refused unread (about 25 million chunks: a 100 TiB
/// image in 4 MiB chunks); a corrupt or planted giant never fills memory.
pub const MAX_INDEX_FILE: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct StoreRoot {
    path: PathBuf,
    dir: Arc<File>,
}

/// What kind of file a metadata describes, for errors.
fn file_kind(md: &Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_dir() {
        "folder"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "regular file"
    }
}

impl StoreRoot {
    /// Open the (canonical) store root. The path up to here is the user's choice; what
    /// lies below it is the store's content, trusted for nothing.
    pub fn open(path: &Path) -> Result<StoreRoot> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .ctx(format!("datastore {}", path.display()))?;
        Ok(StoreRoot {
            path: path.to_path_buf(),
            dir: Arc::new(dir),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `p` relative to the root; only plain components (no `..`, no root).
    fn rel<'a>(&self, p: &'a Path) -> Result<&'a Path> {
        let rel = p
            .strip_prefix(&self.path)
            .map_err(|_| Error::invalid(p.display(), "not inside the datastore"))?;
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::invalid(
                p.display(),
                "not a plain path inside the datastore",
            ));
        }
        Ok(rel)
    }

    fn open_raw(&self, p: &Path, flags: i32) -> Result<io::Result<File>> {
        let rel = self.rel(p)?;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        Ok(sys::open_beneath(&self.dir, rel, flags, 0))
    }

    /// Metadata of `p` without following any symlink; a symlink on the way (or at the
    /// end) makes `p` unreachable: `NotFound`.
    pub fn metadata(&self, p: &Path) -> Result<Metadata> {
        match self.open_raw(p, libc::O_PATH | libc::O_NOFOLLOW)? {
            Ok(f) => f.metadata().ctx(p.display()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::not_found(format!(
                "{} (a symbolic link on the way, not followed)",
                p.display()
            ))),
            Err(e) => Err(Error::io(p.display(), e)),
        }
    }

    pub fn is_dir(&self, p: &Path) -> bool {
        self.metadata(p).is_ok_and(|m| m.is_dir())
    }

    pub fn is_file(&self, p: &Path) -> bool {
        self.metadata(p).is_ok_and(|m| m.is_file())
    }

    /// Open a regular file for reading. Anything else (FIFO, device, folder, a symlink
    /// anywhere on the way) is refused as damage naming `p`, without blocking.
    pub fn open_file(&self, p: &Path) -> Result<(File, Metadata)> {
        let file = match self.open_raw(p, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW)? {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::corrupt(
                    p.display(),
                    CorruptKind::FileType("a symbolic link (not followed)"),
                ))
            }
            Err(e) => return Err(Error::io(p.display(), e)),
        };
        let md = file.metadata().ctx(p.display())?;
        if !md.is_file() {
            return Err(Error::corrupt(
                p.display(),
                CorruptKind::FileType(file_kind(&md)),
            ));
        }
        Ok((file, md))
    }

    /// A whole regular file of at most `limit` bytes; a larger one is refused unread.
    pub fn read(&self, p: &Path, limit: u64) -> Result<Vec<u8>> {
        let (file, md) = self.open_file(p)?;
        if md.len() > limit {
            return Err(Error::corrupt(
                p.display(),
                CorruptKind::Size {
                    len: md.len(),
                    why: "larger than its format allows (not read)",
                },
            ));
        }
        let mut out = Vec::with_capacity(md.len() as usize);
        // The file may grow meanwhile: never read past the limit.
        file.take(limit + 1)
            .read_to_end(&mut out)
            .ctx(p.display())?;
        if out.len() as u64 > limit {
            return Err(Error::corrupt(
                p.display(),
                CorruptKind::Size {
                    len: out.len() as u64,
                    why: "grew past what its format allows",
                },
            ));
        }
        Ok(out)
    }

    /// An index file, its size checked against its header before the body is read, and
    /// a dynamic index's entries checked as they are read, so a sparse or planted giant
    /// fails after a few kilobytes.
    pub fn read_index(&self, p: &Path) -> Result<Index> {
        let what = || p.display().to_string();
        let (mut file, md) = self.open_file(p)?;
        let len = md.len();
        if len > MAX_INDEX_FILE {
            return Err(Error::corrupt(
                what(),
                CorruptKind::Size {
                    len,
                    why: "larger than any index pbsfs reads",
                },
            ));
        }
        if len < INDEX_HEADER_SIZE as u64 {
            return Err(Error::corrupt(
                what(),
                CorruptKind::Truncated {
                    len,
                    need: INDEX_HEADER_SIZE as u64,
                },
            ));
        }
        let mut raw = vec![0u8; INDEX_HEADER_SIZE];
        file.read_exact(&mut raw).ctx(what())?;
        Index::check_file_len(&raw, len).map_err(|e| e.context(what()))?;
        // Read the body in blocks; a dynamic index must keep increasing as it goes.
        let mut block = vec![0u8; 1 << 20];
        let mut checker = Index::body_checker(&raw);
        loop {
            let n = file.read(&mut block).ctx(what())?;
            if n == 0 {
                break;
            }
            checker.feed(&block[..n]).map_err(|e| e.context(what()))?;
            raw.extend_from_slice(&block[..n]);
            if raw.len() as u64 > len {
                return Err(Error::corrupt(
                    what(),
                    CorruptKind::Size {
                        len: raw.len() as u64,
                        why: "grew while read",
                    },
                ));
            }
        }
        Index::parse(&raw).map_err(|e| e.context(what()))
    }

    /// The entries of folder `p`; `None` when it does not exist (or is reached only
    /// through a symlink). Read from the opened folder's own descriptor: entries are
    /// listed, never followed (`Listing::kind` and `Listing::stat` do not follow
    /// symlinks either).
    pub fn read_dir(&self, p: &Path) -> Result<Option<Listing>> {
        let dir = match self.open_raw(p, libc::O_RDONLY | libc::O_DIRECTORY)? {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(Error::io(p.display(), e)),
        };
        let entries = sys::read_dir_fd(&dir).ctx(p.display())?;
        Ok(Some(Listing {
            dir,
            path: p.to_path_buf(),
            entries,
        }))
    }

    /// Folder `p`, opened beneath the root: the place to create, replace and remove
    /// files without a symlink swapped in on the way.
    pub fn dir(&self, p: &Path) -> Result<StoreDir> {
        Ok(StoreDir {
            file: self.open_dir(p)?,
            shown: p.to_path_buf(),
        })
    }

    /// Folder `p`, made with `mode` and `owner` where missing, each component below
    /// the root opened or made without following a symlink (one planted on the way is
    /// an error, never a detour).
    pub fn ensure_dir(&self, p: &Path, mode: u32, owner: Owner) -> Result<StoreDir> {
        let rel = self.rel(p)?;
        let mut cur = self.dir(&self.path)?;
        for comp in rel.components() {
            let next = cur.shown.join(comp);
            match self.open_raw(&next, libc::O_RDONLY | libc::O_DIRECTORY)? {
                Ok(f) => {
                    cur = StoreDir {
                        file: f,
                        shown: next,
                    };
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(Error::io(next.display(), e)),
            }
            // mkdir does not follow a symlink in its last component: a planted one is
            // EEXIST here and ELOOP when opened next.
            crate::store::files::create_dir(&cur.join(comp.as_os_str()), mode, owner)
                .map_err(|e| e.context(next.display()))?;
            cur = self.dir(&next)?;
        }
        Ok(cur)
    }

    /// Open folder `p` (for `flock`), never through a symlink.
    pub fn open_dir(&self, p: &Path) -> Result<File> {
        match self.open_raw(p, libc::O_RDONLY | libc::O_DIRECTORY)? {
            Ok(d) => Ok(d),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::not_found(format!(
                "{} (a symbolic link on the way, not followed)",
                p.display()
            ))),
            Err(e) => Err(Error::io(p.display(), e)),
        }
    }
}

/// The entries of an opened folder (see `StoreRoot::read_dir`).
#[derive(Debug)]
pub struct Listing {
    dir: File,
    path: PathBuf,
    entries: Vec<(OsString, EntryType)>,
}

impl Listing {
    pub fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.entries.iter().map(|(n, _)| n.as_os_str())
    }

    /// Every entry with its type, without following a symlink (`lstat` where the file
    /// system's `d_type` did not say).
    pub fn typed(&self) -> Result<Vec<(&OsStr, EntryType)>> {
        self.entries
            .iter()
            .map(|(n, t)| match t {
                EntryType::Unknown => {
                    let st = self.stat(n)?;
                    let t = if st.is_dir() {
                        EntryType::Dir
                    } else if st.is_file() {
                        EntryType::File
                    } else if st.mode & libc::S_IFMT == libc::S_IFLNK {
                        EntryType::Symlink
                    } else {
                        EntryType::Other
                    };
                    Ok((n.as_os_str(), t))
                }
                t => Ok((n.as_os_str(), *t)),
            })
            .collect()
    }

    /// `lstat` of `name` in this folder, through its descriptor.
    pub fn stat(&self, name: &OsStr) -> Result<StatAt> {
        sys::stat_at(&self.dir, name).map_err(|e| Error::io(self.path.join(name).display(), e))
    }
}

/// A folder inside the store opened without following symlinks. Names inside it are
/// reached through `/proc/self/fd/N/NAME`, which resolves to this very folder whatever
/// its path names meanwhile; std's file functions then act on the name in it (a
/// symlink as the last component is never followed by `O_NOFOLLOW`, `O_EXCL`, rename,
/// unlink or mkdir).
#[derive(Debug)]
pub struct StoreDir {
    file: File,
    /// The folder's path in the store, for messages.
    shown: PathBuf,
}

impl StoreDir {
    /// The path that reaches `name` inside this opened folder.
    pub fn join(&self, name: impl AsRef<std::ffi::OsStr>) -> PathBuf {
        self.path().join(name.as_ref())
    }

    /// The path that reaches this opened folder.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// The folder's path in the store, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_fifos_and_outside_paths_are_never_followed_or_read() {
        let base = std::env::temp_dir().join(format!(
            "pbsfs-root-{}",
            crate::store::files::random_suffix(8)
        ));
        let store = base.join("store");
        std::fs::create_dir_all(store.join("real")).unwrap();
        std::fs::write(base.join("secret"), b"outside").unwrap();
        std::fs::write(store.join("real/file"), b"inside").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), store.join("link")).unwrap();
        std::os::unix::fs::symlink(&base, store.join("dirlink")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(store.join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        let r = StoreRoot::open(&store).unwrap();
        assert_eq!(r.read(&store.join("real/file"), 100).unwrap(), b"inside");
        for p in ["link", "dirlink/secret", "fifo", "real"] {
            let e = r.read(&store.join(p), 100).unwrap_err();
            assert_eq!(e.errno(), libc::EIO, "{p}: {e}");
        }
        assert!(r.metadata(&store.join("dirlink/secret")).is_err());
        assert!(!r.is_dir(&store.join("dirlink")));
        assert!(r.read_dir(&store.join("dirlink")).unwrap().is_none());
        assert!(r.read(&store.join("../secret"), 100).is_err());
        assert!(r.read(&base.join("secret"), 100).is_err());
        // Size checked before reading.
        let e = r.read(&store.join("real/file"), 3).unwrap_err();
        assert!(matches!(
            e.kind(),
            Error::Corrupt {
                why: CorruptKind::Size { .. },
                ..
            }
        ));
        std::fs::remove_dir_all(base).unwrap();
    }
}
