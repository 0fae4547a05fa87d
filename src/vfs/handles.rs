//! Open files: the handle table and the operations on handles (open, read, write,
//! flush, fsync, release). Archives read through their `IndexReader`; metadata handles
//! buffer and commit by the rules of ARCHITECTURE §3 (`meta.rs`); scratch handles read
//! and write memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::util::error::{Error, Result};

use super::meta::{MetaFile, MetaHandle};
use super::node::Node;
use super::pxar::PxarHandle;
use super::scratch::Shared;
use super::{ArchiveHandle, Caller, DirEntry, Kind, Opened, Vfs};

/// A directory listing, taken at offset 0: each entry with its node (none for `.` and
/// `..`).
pub(super) type DirListing = Arc<Mutex<Vec<(DirEntry, Option<Node>)>>>;

#[derive(Debug)]
pub(super) enum Handle {
    /// A directory listing, taken at offset 0.
    Dir(DirListing),
    Archive(Arc<ArchiveHandle>),
    /// A regular file inside a pxar archive.
    Pxar(Arc<PxarHandle>),
    /// Read-only content fixed at open (manifest.json, owner, metadata opened to read).
    Bytes(Arc<Vec<u8>>),
    Meta(MetaFile, Arc<Mutex<MetaState>>),
    Scratch {
        file: Shared,
        append: bool,
        writable: bool,
    },
}

/// A metadata handle and whether its last close (flush) came after its last change, so
/// another open may commit it before its release arrives.
#[derive(Debug)]
pub(super) struct MetaState {
    pub(super) h: MetaHandle,
    pub(super) flushed: bool,
}

pub(super) fn bad_handle(fh: u64) -> Error {
    Error::BadHandle { fh }
}

fn slice_at(data: &[u8], offset: u64, size: u32) -> Vec<u8> {
    let start = (offset.min(data.len() as u64)) as usize;
    let end = start.saturating_add(size as usize).min(data.len());
    data[start..end].to_vec()
}

impl Vfs {
    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }

    pub(super) fn meta_handles(&self, f: &MetaFile) -> Vec<Arc<Mutex<MetaState>>> {
        self.handles
            .lock()
            .values()
            .filter_map(|h| match h {
                Handle::Meta(file, m) if file == f => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Commit the closed-but-not-released saves of `f`, so an open that reads the
    /// content sees them.
    pub(super) fn commit_pending(&self, f: &MetaFile) {
        for m in self.meta_handles(f) {
            let mut st = m.lock();
            if st.flushed && st.h.dirty && st.h.poisoned.is_none() {
                let _ = self.meta_commit_handle(&mut st.h);
            }
        }
    }

    /// After a commit of `f`: a closed-but-not-released truncation of another handle
    /// is older than it, and must not overtake it at its release. (A handle that
    /// writes again is no longer pending, and commits its write.) Handles locked now
    /// are left alone: the one committing (its caller holds it) and any another
    /// request is acting on.
    pub(super) fn supersede_pending(&self, f: &MetaFile) {
        for m in self.meta_handles(f) {
            if let Some(mut st) = m.try_lock() {
                if st.flushed && st.h.dirty && st.h.poisoned.is_none() {
                    st.h.dirty = false;
                }
            }
        }
    }

    pub fn open(&self, ino: u64, flags: i32, caller: Caller) -> Result<Opened> {
        let node = self.node(ino)?;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let direct = |fh| Opened {
            fh,
            direct_io: true,
            keep_cache: false,
        };
        match &node {
            Node::Archive { dir, file, .. } => {
                if write {
                    return Err(self.not_writable(&node.describe()));
                }
                // The name now holds other content (a snapshot made again at the same
                // time): make the kernel look it up again rather than mix pages.
                if self.archive_node(dir, file)? != node {
                    return Err(Error::Stale {
                        what: node.describe(),
                    });
                }
                let h = self.open_archive(dir, file)?;
                Ok(Opened {
                    fh: self.add_handle(Handle::Archive(Arc::new(h))),
                    direct_io: false,
                    keep_cache: true,
                })
            }
            Node::ManifestJson(d) => {
                if write {
                    return Err(self.not_writable("manifest.json"));
                }
                let bytes = self.snap_view(d)?.json()?.to_vec();
                Ok(direct(self.add_handle(Handle::Bytes(Arc::new(bytes)))))
            }
            Node::GroupOwner(g) => {
                if write {
                    return Err(self.not_writable("owner"));
                }
                let bytes = self.ds.group_owner_bytes(g)?;
                Ok(direct(self.add_handle(Handle::Bytes(Arc::new(bytes)))))
            }
            Node::SnapNotes(_) | Node::VerifyState(_) | Node::GroupNotes(_) => {
                let f = MetaFile::from_node(&node).expect("a metadata node");
                if write {
                    self.check_rw()?;
                }
                // An open with O_TRUNC reads nothing, so it commits no pending
                // truncation: that could be a shell's between its open and its write
                // (`printf x > notes` flushes its dup2'd descriptor before writing),
                // an empty value no save meant. Its own commit supersedes them.
                if !(write && trunc) {
                    self.commit_pending(&f);
                }
                if !write {
                    let bytes = self.meta_committed(&f)?;
                    return Ok(direct(self.add_handle(Handle::Bytes(Arc::new(bytes)))));
                }
                let buf = if trunc {
                    Vec::new()
                } else {
                    self.meta_committed(&f)?
                };
                let h = MetaHandle {
                    file: f.clone(),
                    pid: caller.pid,
                    writable: true,
                    append: flags & libc::O_APPEND != 0,
                    buf,
                    dirty: trunc,
                    wrote: false,
                    poisoned: None,
                };
                let st = MetaState { h, flushed: false };
                Ok(direct(
                    self.add_handle(Handle::Meta(f, Arc::new(Mutex::new(st)))),
                ))
            }
            Node::Scratch(id) => {
                let file = self
                    .scratch
                    .get(*id)
                    .ok_or_else(|| Error::not_found(node.describe()))?;
                if write {
                    self.check_rw()?;
                    if trunc {
                        file.lock().truncate(0)?;
                    }
                }
                Ok(direct(self.add_handle(Handle::Scratch {
                    file,
                    append: flags & libc::O_APPEND != 0,
                    writable: write,
                })))
            }
            Node::PxarEntry {
                archive,
                offset,
                kind: Kind::File,
                end,
            } => {
                if write {
                    return Err(self.not_writable(&node.describe()));
                }
                let h = self.pxar_open(archive, (*offset, *end))?;
                Ok(Opened {
                    fh: self.add_handle(Handle::Pxar(Arc::new(h))),
                    direct_io: false,
                    keep_cache: true,
                })
            }
            Node::Latest(..)
            | Node::PxarEntry {
                kind: Kind::Symlink,
                ..
            } => Err(Error::IsASymlink {
                what: node.describe(),
            }),
            // Device nodes, FIFOs and sockets are opened by the kernel itself.
            Node::PxarEntry { .. } => Err(Error::invalid(node.describe(), "not a regular file")),
            Node::Namespace(_)
            | Node::NsDir(_)
            | Node::TypeDir(..)
            | Node::Group(_)
            | Node::Snapshot(..)
            | Node::PxarRoot(_) => Err(Error::IsADirectory {
                what: node.describe(),
            }),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let h = match self.handles.lock().get(&fh) {
            Some(Handle::Archive(a)) => Handle::Archive(a.clone()),
            Some(Handle::Pxar(p)) => Handle::Pxar(p.clone()),
            Some(Handle::Bytes(b)) => Handle::Bytes(b.clone()),
            Some(Handle::Meta(f, m)) => Handle::Meta(f.clone(), m.clone()),
            Some(Handle::Scratch { file, .. }) => Handle::Scratch {
                file: file.clone(),
                append: false,
                writable: false,
            },
            Some(Handle::Dir(_)) => {
                return Err(Error::IsADirectory {
                    what: format!("file handle {fh}"),
                })
            }
            None => return Err(bad_handle(fh)),
        };
        match h {
            Handle::Archive(a) => self.read_archive(&a, offset, size),
            Handle::Pxar(p) => self.pxar_read(&p, offset, size),
            Handle::Bytes(b) => Ok(slice_at(&b, offset, size)),
            Handle::Meta(_, m) => Ok(slice_at(&m.lock().h.buf, offset, size)),
            Handle::Scratch { file, .. } => Ok(slice_at(file.lock().data(), offset, size)),
            Handle::Dir(_) => Err(bad_handle(fh)),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handles.lock().get(&fh).map(|h| match h {
            Handle::Meta(f, m) => Ok(Handle::Meta(f.clone(), m.clone())),
            Handle::Scratch {
                file,
                append,
                writable,
            } => Ok(Handle::Scratch {
                file: file.clone(),
                append: *append,
                writable: *writable,
            }),
            _ => Err(bad_handle(fh)),
        });
        match h.ok_or_else(|| bad_handle(fh))?? {
            Handle::Meta(f, m) => {
                let mut st = m.lock();
                st.flushed = false;
                let res = st.h.write(offset, data);
                if res.is_err() {
                    self.forget_kernel_size(&f);
                }
                res
            }
            Handle::Scratch {
                file,
                append,
                writable: true,
            } => {
                let mut f = file.lock();
                let at = if append {
                    f.data().len() as u64
                } else {
                    offset
                };
                f.write(at, data)
            }
            _ => Err(bad_handle(fh)),
        }
    }

    pub(super) fn meta_of(&self, fh: u64) -> Result<Option<Arc<Mutex<MetaState>>>> {
        match self.handles.lock().get(&fh) {
            Some(Handle::Meta(_, m)) => Ok(Some(m.clone())),
            Some(_) => Ok(None),
            None => Err(bad_handle(fh)),
        }
    }

    /// A `close()` of one descriptor: commits a metadata handle that wrote since its last
    /// commit; the error reaches `close()`.
    pub fn flush(&self, fh: u64) -> Result<()> {
        if let Some(m) = self.meta_of(fh)? {
            let mut st = m.lock();
            let res = self.meta_flush(&mut st.h);
            // A refused save's FLUSH: the FUSE adapter invalidates the inode itself
            // before replying (`fuse.rs`), so close() returns with the size dropped.
            st.flushed = true;
            return res;
        }
        Ok(())
    }

    /// A refused edit: the kernel sized the file by the writes it let through (and by
    /// `O_TRUNC`), and clamps reads to that size until its attributes expire, so a
    /// reader right after would see a cut copy of the committed content. Make it ask.
    fn forget_kernel_size(&self, f: &MetaFile) {
        let node = match f {
            MetaFile::SnapNotes(d) => Node::SnapNotes(d.clone()),
            MetaFile::VerifyState(d) => Node::VerifyState(d.clone()),
            MetaFile::GroupNotes(g) => Node::GroupNotes(g.clone()),
        };
        if let Some(ino) = self.inodes.live(&node) {
            self.invalidate(super::Inval::Inode(ino));
        }
    }

    pub fn fsync(&self, fh: u64) -> Result<()> {
        if let Some(m) = self.meta_of(fh)? {
            return self.meta_fsync(&mut m.lock().h);
        }
        Ok(())
    }

    /// The last close of a handle (asynchronous to the application).
    pub fn release(&self, fh: u64) {
        let h = self.handles.lock().remove(&fh);
        if let Some(Handle::Meta(_, m)) = h {
            self.meta_release(&mut m.lock().h);
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }
}
