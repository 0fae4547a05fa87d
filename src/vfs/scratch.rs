//! Scratch files of editors (swap files, `4913`, `sedXXXXXX`, backups): kept in memory
//! only, per mount, POSIX-like (O_EXCL, unlink, rename, truncate, chmod stored), capped
//! at `MAX_FILES` names and `MAX_BYTES` of content (beyond: ENOSPC). They never reach
//! the datastore except as the content of a `rename(scratch -> notes)` save.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::util::error::{Error, Result};

use super::{Attr, Kind};

pub const MAX_FILES: usize = 64;
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

fn no_space() -> Error {
    Error::NoSpace {
        what: format!("the mount ({MAX_FILES} files, {MAX_BYTES} bytes)"),
    }
}

/// One scratch file. Its bytes count against the mount's budget until it is dropped
/// (unlinked and closed).
#[derive(Debug)]
pub struct ScratchFile {
    pub id: u64,
    data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    used: Arc<AtomicU64>,
}

impl ScratchFile {
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Resize to `len`, within the mount's budget.
    fn resize(&mut self, len: usize) -> Result<()> {
        let old = self.data.len() as u64;
        let new = len as u64;
        if new > old {
            let grow = new - old;
            let prev = self.used.fetch_add(grow, Ordering::SeqCst);
            if prev + grow > MAX_BYTES {
                self.used.fetch_sub(grow, Ordering::SeqCst);
                return Err(no_space());
            }
        } else {
            self.used.fetch_sub(old - new, Ordering::SeqCst);
        }
        self.data.resize(len, 0);
        self.mtime = SystemTime::now();
        Ok(())
    }

    pub fn write(&mut self, offset: u64, buf: &[u8]) -> Result<u32> {
        let at = offset as usize;
        let end = at
            .checked_add(buf.len())
            .filter(|e| (*e as u64) <= MAX_BYTES)
            .ok_or_else(no_space)?;
        if end > self.data.len() {
            self.resize(end)?;
        }
        self.data[at..end].copy_from_slice(buf);
        self.mtime = SystemTime::now();
        Ok(buf.len() as u32)
    }

    pub fn truncate(&mut self, len: u64) -> Result<()> {
        if len > MAX_BYTES {
            return Err(no_space());
        }
        self.resize(len as usize)
    }

    pub fn attr(&self) -> Attr {
        Attr {
            ino: 0,
            kind: Kind::File,
            size: self.data.len() as u64,
            perm: (self.mode & 0o7777) as u16,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            nlink: 1,
            rdev: 0,
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.used
            .fetch_sub(self.data.len() as u64, Ordering::SeqCst);
    }
}

pub type Shared = Arc<Mutex<ScratchFile>>;

/// What the scratch files of a mount take of its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Content of every live file, unlinked ones still open included.
    pub bytes: u64,
    /// Names (an unlinked file frees its name at once, its bytes when closed).
    pub files: usize,
}

/// The scratch namespace of a mount: (directory inode, name) -> file.
#[derive(Debug, Default)]
pub struct ScratchStore {
    inner: Mutex<Inner>,
    used: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Inner {
    names: HashMap<(u64, OsString), Shared>,
    /// Every live file by id, including unlinked ones still open.
    by_id: HashMap<u64, Weak<Mutex<ScratchFile>>>,
    next_id: u64,
}

impl ScratchStore {
    pub fn lookup(&self, dir: u64, name: &OsStr) -> Option<Shared> {
        self.inner
            .lock()
            .names
            .get(&(dir, name.to_os_string()))
            .cloned()
    }

    pub fn get(&self, id: u64) -> Option<Shared> {
        self.inner.lock().by_id.get(&id).and_then(Weak::upgrade)
    }

    pub fn attr(&self, id: u64) -> Result<Attr> {
        self.get(id)
            .map(|f| f.lock().attr())
            .ok_or_else(|| Error::not_found(format!("scratch file {id}")))
    }

    /// Create `name` in `dir`; an existing one is returned unless `excl` (EEXIST).
    pub fn create(
        &self,
        dir: u64,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
        excl: bool,
    ) -> Result<Shared> {
        let mut g = self.inner.lock();
        let key = (dir, name.to_os_string());
        if let Some(f) = g.names.get(&key) {
            if excl {
                return Err(Error::AlreadyExists {
                    what: format!("{name:?}"),
                });
            }
            return Ok(f.clone());
        }
        if g.names.len() >= MAX_FILES {
            return Err(no_space());
        }
        g.next_id += 1;
        let id = g.next_id;
        let f = Arc::new(Mutex::new(ScratchFile {
            id,
            data: Vec::new(),
            mode,
            uid,
            gid,
            mtime: SystemTime::now(),
            used: self.used.clone(),
        }));
        g.by_id.retain(|_, w| w.strong_count() > 0);
        g.by_id.insert(id, Arc::downgrade(&f));
        g.names.insert(key, f.clone());
        Ok(f)
    }

    /// Remove a name; the file lives on while open.
    pub fn unlink(&self, dir: u64, name: &OsStr) -> Option<Shared> {
        self.inner.lock().names.remove(&(dir, name.to_os_string()))
    }

    /// Move a name, replacing an existing target (refused with `noreplace`).
    pub fn rename(
        &self,
        dir: u64,
        name: &OsStr,
        new_dir: u64,
        new_name: &OsStr,
        noreplace: bool,
    ) -> Result<()> {
        let mut g = self.inner.lock();
        let to = (new_dir, new_name.to_os_string());
        if noreplace && g.names.contains_key(&to) {
            return Err(Error::AlreadyExists {
                what: format!("{new_name:?}"),
            });
        }
        let f = g
            .names
            .remove(&(dir, name.to_os_string()))
            .ok_or_else(|| Error::not_found(format!("{name:?}")))?;
        g.names.insert(to, f);
        Ok(())
    }

    /// Names in `dir`, with their ids.
    pub fn list(&self, dir: u64) -> Vec<(OsString, u64)> {
        let g = self.inner.lock();
        let mut v: Vec<_> = g
            .names
            .iter()
            .filter(|((d, _), _)| *d == dir)
            .map(|((_, n), f)| (n.clone(), f.lock().id))
            .collect();
        v.sort();
        v
    }

    pub fn usage(&self) -> Usage {
        Usage {
            bytes: self.used.load(Ordering::SeqCst),
            files: self.inner.lock().names.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_like_names_and_limits() {
        let s = ScratchStore::default();
        let a = s.create(5, OsStr::new("a"), 0o600, 0, 0, true).unwrap();
        assert_eq!(
            s.create(5, OsStr::new("a"), 0o600, 0, 0, true)
                .unwrap_err()
                .errno(),
            libc::EEXIST
        );
        a.lock().write(3, b"xyz").unwrap();
        assert_eq!(a.lock().data(), b"\0\0\0xyz");
        assert_eq!(s.usage(), Usage { bytes: 6, files: 1 });
        s.rename(5, OsStr::new("a"), 5, OsStr::new("b"), false)
            .unwrap();
        assert!(s.lookup(5, OsStr::new("a")).is_none());
        let id = a.lock().id;
        assert_eq!(s.list(5), vec![(OsString::from("b"), id)]);
        s.unlink(5, OsStr::new("b")).unwrap();
        assert!(s.get(id).is_some(), "still open");
        drop(a);
        assert!(s.get(id).is_none());
        assert_eq!(s.usage(), Usage { bytes: 0, files: 0 });
        for i in 0..MAX_FILES {
            s.create(1, OsStr::new(&i.to_string()), 0o600, 0, 0, true)
                .unwrap();
        }
        assert_eq!(
            s.create(1, OsStr::new("x"), 0o600, 0, 0, true)
                .unwrap_err()
                .errno(),
            libc::ENOSPC
        );
        let big = s.lookup(1, OsStr::new("0")).unwrap();
        big.lock().truncate(MAX_BYTES).unwrap();
        let other = s.lookup(1, OsStr::new("1")).unwrap();
        assert_eq!(
            other.lock().write(0, b"x").unwrap_err().errno(),
            libc::ENOSPC
        );
    }
}
