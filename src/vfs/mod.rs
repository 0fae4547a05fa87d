//! The mount without a kernel: every filesystem operation pbsfs answers, on inode
//! numbers and file handles, returning `crate::Error` (whose `errno()` is the only errno
//! mapping). `fuse.rs` only translates between this and fuser; tests drive it directly.
//!
//! Invariants: inode numbers come from `InodeTable` and never change for a key; archive
//! bytes come only from `ChunkStore::read_verified` (via `reader.rs`); a metadata file
//! changes only through `meta.rs`, one transaction per save; scratch files never touch
//! the datastore.

mod archive;
mod edit;
pub mod groups;
mod handles;
pub mod inode;
pub mod memo;
pub mod meta;
pub mod node;
mod pxar;
mod scope;
pub mod scratch;
mod tree;
mod warm;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::store::chunks::cache::{ChunkCache, Prefetcher};
use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::store::Datastore;
use crate::util::error::{Error, ReadOnlyWhy, Result};
use crate::util::sys::FsStats;

use archive::ArchiveHandle;
use groups::{GroupListing, MAX_GROUPS};
use handles::{bad_handle, Handle};
use inode::{InodeTable, ROOT_INO};
use memo::Memo;
use meta::{MetaFile, SnapSummary, SnapView, MAX_SUMMARIES, MAX_VIEWS};
use node::Node;
use scratch::ScratchStore;

/// Archive sizes remembered (a blob's size costs a decode); the oldest go beyond.
pub const MAX_SIZES: usize = 512;
/// Listings of folders read without a handle kept at most (one per folder being listed
/// right now is enough; the oldest go beyond and are read again if continued).
const MAX_DIR_LISTINGS: usize = 256;
/// The extended attribute of SELinux labels (see `getxattr`).
const SELINUX_XATTR: &str = "security.selinux";
/// The block size `statfs` counts scratch space in.
const STATFS_BLOCK: u32 = 4096;
/// The handle of a folder read without OPENDIR (see `dir_listing`).
pub const NO_HANDLE: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Entries of pxar archives only.
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

/// What `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub nlink: u32,
    /// Device number of a device node (pxar entries), else 0.
    pub rdev: u32,
}

/// An answer to lookup/getattr: attributes and how long the kernel may cache them (and
/// the name binding).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
    /// How long the attributes may be cached.
    pub ttl: Duration,
    /// How long the name -> inode binding may be cached.
    pub entry_ttl: Duration,
}

/// An open file: its handle and how the kernel should cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (content that changes: metadata and scratch files).
    pub direct_io: bool,
    /// Keep cached pages from earlier opens (archive content never changes).
    pub keep_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// The offset to ask for to continue after this entry.
    pub next_offset: u64,
    pub kind: Kind,
    pub name: OsString,
}

/// Attribute changes of a setattr; unset fields stay.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Set by `touch` and `touch -a`; no file keeps one (scratch files ignore it).
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

/// What the kernel must forget after a change made through the mount, sent by the
/// FUSE adapter from a thread of its own (never from inside a request handler: the
/// kernel may wait for that very request to finish).
///
/// Only inodes, never names: a commit changes the content and attributes of files
/// whose names keep their inodes. A name's invalidation takes its folder's lock in the
/// kernel, which a writer creating a file there holds while it waits for the mount's
/// answer; with the mount killed at that moment, neither could go on, and the killed
/// mount never exited (found by `savers.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inval {
    /// Attributes (and cached pages) of an inode.
    Inode(u64),
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub read_only: bool,
    /// Bytes of verified chunks kept in memory.
    pub cache_size: u64,
    /// The namespace shown as the mount root.
    pub ns: BackupNamespace,
}

/// The filesystem.
#[derive(Debug)]
pub struct Vfs {
    ds: Arc<Datastore>,
    read_only: bool,
    inodes: InodeTable,
    cache: Arc<ChunkCache>,
    prefetch: Arc<Prefetcher>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    scratch: ScratchStore,
    views: Memo<BackupDir, Arc<SnapView>>,
    summaries: Memo<BackupDir, Arc<SnapSummary>>,
    groups: Memo<BackupGroup, Arc<GroupListing>>,
    /// Where invalidations go (set by the FUSE adapter; none without a kernel).
    inval: OnceLock<Sender<Inval>>,
    sizes: Memo<Node, u64>,
    pxars: Memo<node::PxarRef, Arc<pxar::PxarArchive>>,
    pxar_entries: Memo<(node::PxarRef, u64), Arc<crate::pxar::decoder::Entry>>,
    warmer: warm::Warmer,
    /// Listings of folders read without a handle, by inode: taken at offset 0, used by
    /// the reads that continue it, dropped when one reaches the end.
    dir_listings: Memo<u64, handles::DirListing>,
}

impl Vfs {
    pub fn new(ds: Datastore, opts: Options) -> Result<Vfs> {
        if !opts.ns.is_root() && !ds.fs().is_dir(&ds.ns_path(&opts.ns)) {
            return Err(Error::not_found(format!("namespace '{}'", opts.ns)));
        }
        // A store that may not be written (read-only medium, maintenance mode, S3) makes
        // a read-only mount by itself: writes get EROFS, files show no write bits.
        let read_only = match ds.access().no_writes {
            Some(r) if !opts.read_only => {
                log::info!("mounting read-only: {r}");
                true
            }
            _ => opts.read_only,
        };
        Ok(Vfs {
            warmer: warm::Warmer::new(ds.fs().clone()),
            dir_listings: Memo::new(MAX_DIR_LISTINGS),
            ds: Arc::new(ds),
            read_only,
            inodes: InodeTable::new(Node::Namespace(opts.ns)),
            cache: Arc::new(ChunkCache::new(opts.cache_size)),
            prefetch: Arc::new(Prefetcher::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            scratch: ScratchStore::default(),
            views: Memo::new(MAX_VIEWS),
            summaries: Memo::new(MAX_SUMMARIES),
            groups: Memo::new(MAX_GROUPS),
            inval: OnceLock::new(),
            sizes: Memo::new(MAX_SIZES),
            pxars: Memo::new(pxar::MAX_ARCHIVES),
            pxar_entries: Memo::new(pxar::MAX_ENTRIES),
        })
    }

    pub fn datastore(&self) -> &Datastore {
        &self.ds
    }

    pub fn chunk_cache(&self) -> &ChunkCache {
        &self.cache
    }

    /// The verified-chunk cache, shared (for the mount's statistics).
    pub fn shared_chunk_cache(&self) -> Arc<ChunkCache> {
        Arc::clone(&self.cache)
    }

    pub fn root_ino(&self) -> u64 {
        ROOT_INO
    }

    /// Entries of the bounded tables (snapshot views, archive sizes), for tests.
    pub fn memo_entries(&self) -> (usize, usize) {
        (self.views.len(), self.sizes.len())
    }

    /// Send the kernel invalidations of what changes through the mount to `tx` (the
    /// FUSE adapter's notifier thread). Set once.
    pub fn set_invalidator(&self, tx: Sender<Inval>) {
        let _ = self.inval.set(tx);
    }

    fn invalidate(&self, i: Inval) {
        if let Some(tx) = self.inval.get() {
            let _ = tx.send(i);
        }
    }

    /// After a commit of `f` through the mount: drop what is kept of the old value and
    /// make the kernel forget the attributes of every file it changed (a snapshot's
    /// `notes`, `verify_state` and `manifest.json` share its manifest). Their names
    /// keep their inodes, so the kernel's cached names stay right (see `Inval`); a
    /// file the kernel holds no inode of has nothing cached.
    pub(crate) fn after_commit(&self, f: &MetaFile) {
        let files = match f {
            MetaFile::SnapNotes(d) | MetaFile::VerifyState(d) => {
                self.forget_snapshot_manifest(d);
                vec![
                    Node::SnapNotes(d.clone()),
                    Node::VerifyState(d.clone()),
                    Node::ManifestJson(d.clone()),
                ]
            }
            MetaFile::GroupNotes(g) => {
                self.forget_group_listing(g);
                vec![Node::GroupNotes(g.clone())]
            }
        };
        for n in files {
            if let Some(ino) = self.inodes.live(&n) {
                self.invalidate(Inval::Inode(ino));
            }
        }
    }

    fn node(&self, ino: u64) -> Result<Node> {
        self.inodes.node(ino).ok_or_else(|| Error::Stale {
            what: format!("inode {ino}"),
        })
    }

    fn entry(&self, node: &Node) -> Result<Entry> {
        let mut attr = self.attr_of(node)?;
        attr.ino = self.inodes.ino(node);
        Ok(Entry {
            attr,
            ttl: node.ttl(),
            entry_ttl: node.entry_ttl(),
        })
    }

    /// An entry for a reply the kernel counts as a lookup (lookup, create): it takes a
    /// reference in the inode table, dropped again by `forget`.
    fn entry_counted(&self, node: &Node) -> Result<Entry> {
        let mut e = self.entry(node)?;
        e.attr.ino = self.inodes.remember(node);
        Ok(e)
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if let Some(live) = self.inodes.forget(ino, n) {
            log::debug!("inode {ino} forgotten, {live} still referenced");
        }
    }

    /// EROFS on a read-only mount, else EACCES (a read-only file of a writable mount).
    fn not_writable(&self, what: &str) -> Error {
        if self.read_only {
            Error::ReadOnly {
                what: what.to_string(),
                why: ReadOnlyWhy::Mount,
            }
        } else {
            Error::AccessDenied {
                what: what.to_string(),
            }
        }
    }

    fn check_rw(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                what: "this change".into(),
                why: ReadOnlyWhy::Mount,
            });
        }
        Ok(())
    }

    /// Refusal of operations the view does not offer (mkdir, rmdir, links).
    pub fn refuse_change(&self, what: &str) -> Error {
        if self.read_only {
            Error::ReadOnly {
                what: what.to_string(),
                why: ReadOnlyWhy::Mount,
            }
        } else {
            Error::NotPermitted {
                what: what.to_string(),
                why: "not supported here".into(),
            }
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        let p = self.node(parent)?;
        if let Some(n) = self.lookup_real(&p, name)? {
            return self.entry_counted(&n);
        }
        if p.holds_scratch() {
            if let Some(f) = self.scratch.lookup(parent, name) {
                let id = f.lock().id;
                return self.entry_counted(&Node::Scratch(id));
            }
        }
        Err(Error::not_found(format!("{name:?}")))
    }

    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        self.entry(&self.node(ino)?)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.node(ino)? {
            // The target is part of the key: a newer snapshot is another inode.
            Node::Latest(_, time) => Ok(crate::util::time::format_utc(time)
                .unwrap_or_default()
                .into_bytes()),
            Node::PxarEntry {
                archive,
                offset,
                kind: Kind::Symlink,
                end,
            } => self.pxar_readlink(&archive, (offset, end)),
            other => Err(Error::invalid(other.describe(), "not a symbolic link")),
        }
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let n = self.node(ino)?;
        if n.kind() != Kind::Dir {
            return Err(Error::NotADirectory { what: n.describe() });
        }
        Ok(self.add_handle(Handle::Dir(Arc::new(Mutex::new(Vec::new())))))
    }

    /// The listing of an open folder: read afresh at offset 0, else the one taken then.
    /// Without a handle (`NO_HANDLE`: the kernel skips OPENDIR and RELEASEDIR, which
    /// halves the requests of `ls -lR`), the listing taken at offset 0 is kept per folder
    /// for the reads that continue it; one continued after it was dropped is read again,
    /// which lists the same entries at the same offsets unless the folder changed
    /// meanwhile (POSIX leaves entries added or removed during a listing unspecified).
    fn dir_listing(&self, ino: u64, fh: u64, offset: u64) -> Result<handles::DirListing> {
        let (listing, fresh) = if fh == NO_HANDLE {
            match self.dir_listings.get(&ino).filter(|_| offset > 0) {
                Some(l) => (l, false),
                None => {
                    let l = handles::DirListing::default();
                    self.dir_listings.insert(ino, l.clone());
                    (l, true)
                }
            }
        } else {
            match self.handles.lock().get(&fh) {
                Some(Handle::Dir(l)) => (l.clone(), offset == 0),
                _ => return Err(bad_handle(fh)),
            }
        };
        if fresh {
            let node = self.node(ino)?;
            let mut names: Vec<(OsString, u64, Kind, Option<Node>)> = vec![
                (".".into(), ino, Kind::Dir, None),
                ("..".into(), ino, Kind::Dir, None),
            ];
            for (name, n) in self.list_dir(&node)? {
                names.push((name, self.inodes.ino(&n), n.kind(), Some(n)));
            }
            if node.holds_scratch() {
                for (name, id) in self.scratch.list(ino) {
                    let n = Node::Scratch(id);
                    names.push((name, self.inodes.ino(&n), Kind::File, Some(n)));
                }
            }
            *listing.lock() = names
                .into_iter()
                .enumerate()
                .map(|(i, (name, ino, kind, node))| {
                    let e = DirEntry {
                        ino,
                        next_offset: i as u64 + 1,
                        kind,
                        name,
                    };
                    (e, node)
                })
                .collect();
        }
        Ok(listing)
    }

    /// Entries from `offset` on; the listing is read afresh at offset 0.
    pub fn readdir(&self, ino: u64, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let listing = self.dir_listing(ino, fh, offset)?;
        let l = listing.lock();
        self.listed_to_end(ino, fh, offset, l.len());
        Ok(l.iter()
            .skip(offset as usize)
            .map(|(e, _)| e.clone())
            .collect())
    }

    /// A read without a handle at or past the end: that listing is done.
    fn listed_to_end(&self, ino: u64, fh: u64, offset: u64, len: usize) {
        if fh == NO_HANDLE && offset >= len as u64 {
            self.dir_listings.remove(&ino);
        }
    }

    /// READDIRPLUS: entries from `offset` on (the listing read afresh at offset 0), each
    /// given to `add` with its attributes (`None` for `.` and `..`) until `add` says the
    /// reply is full. Each entry added with attributes counts as a lookup, as the kernel
    /// counts it; one whose attributes fail goes with placeholder attributes valid for no
    /// time, so the kernel asks again and gets the error.
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry, Option<&Entry>) -> bool,
    ) -> Result<()> {
        let _scope = scope::enter(self);
        let listing = self.dir_listing(ino, fh, offset)?;
        let l = listing.lock();
        self.listed_to_end(ino, fh, offset, l.len());
        for (e, node) in l.iter().skip(offset as usize) {
            let Some(n) = node else {
                if add(e, None) {
                    break;
                }
                continue;
            };
            let ino = self.inodes.remember(n);
            let entry = match self.entry(n) {
                Ok(mut entry) => {
                    entry.attr.ino = ino;
                    entry
                }
                Err(err) => {
                    log::debug!("readdirplus: {}: {err}", n.describe());
                    Entry {
                        attr: Attr {
                            ino,
                            kind: n.kind(),
                            size: 0,
                            perm: 0,
                            uid: 0,
                            gid: 0,
                            mtime: SystemTime::UNIX_EPOCH,
                            nlink: 1,
                            rdev: 0,
                        },
                        ttl: Duration::ZERO,
                        entry_ttl: Duration::ZERO,
                    }
                }
            };
            let e = DirEntry { ino, ..e.clone() };
            if add(&e, Some(&entry)) {
                // Not sent: not counted.
                self.inodes.forget(ino, 1);
                break;
            }
        }
        Ok(())
    }

    /// One extended attribute: pxar entries have theirs (xattrs, ACLs, capabilities),
    /// or none (ENODATA). The files and folders pbsfs makes up cannot have any (their
    /// setxattr fails too): EOPNOTSUPP, which `ls -l` takes as "this file system has no
    /// ACLs and no security labels" and stops asking for the rest of the listing (two
    /// requests per file otherwise); `cp -a` and editors then copy modes only.
    ///
    /// A pxar entry without an SELinux label answers `security.selinux` with EOPNOTSUPP
    /// too, not ENODATA: `ls -l` asks every file for its label and its ACL, half of the
    /// requests of a listing of a tree (10,150 of 20,521 for 10,000 files), and stops
    /// asking for labels after this answer. An entry that has a label still gives it;
    /// only `ls`'s `.` mark of later labelled files in the same listing is lost. On an
    /// SELinux host the kernel answers that name itself (the mount's own label), so the
    /// mark never showed an archived label there. ACLs keep ENODATA: their `+` matters.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        if !matches!(node, Node::PxarRoot(_) | Node::PxarEntry { .. }) {
            return Err(Error::Unavailable {
                what: node.describe(),
                why: "extended attributes are not supported here".into(),
            });
        }
        let all = self.xattrs_of(&node)?;
        let found = all
            .into_iter()
            .find(|(n, _)| n.as_slice() == name.as_bytes());
        match found {
            Some((_, v)) => Ok(v),
            None if name == SELINUX_XATTR => Err(Error::Unavailable {
                what: node.describe(),
                why: "no SELinux label was archived (and labels are not asked for)".into(),
            }),
            None => Err(Error::NoXattr {
                what: node.describe(),
                name: name.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The names of a node's extended attributes, each followed by a NUL.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (name, _) in self.xattrs_of(&self.node(ino)?)? {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    fn xattrs_of(&self, node: &Node) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match node {
            Node::PxarRoot(a) => self.pxar_xattrs(a, None),
            Node::PxarEntry {
                archive,
                offset,
                end,
                ..
            } => self.pxar_xattrs(archive, Some((*offset, *end))),
            _ => Ok(Vec::new()),
        }
    }

    /// The space a user can fill through the mount: the scratch files' (editors' swap
    /// and temp files, at most `scratch::MAX_FILES` names and `scratch::MAX_BYTES` bytes
    /// per mount), not the datastore's file system, which no write through the mount
    /// fills (a save rewrites a manifest of a few KiB). Total is that capacity, free is
    /// what is left now; on a read-only mount nothing is available. FUSE carries no
    /// "available" count of file slots: the read-only flag of the mount says it.
    pub fn statfs(&self) -> FsStats {
        let used = self.scratch.usage();
        let bsize = STATFS_BLOCK;
        let bfree = scratch::MAX_BYTES.saturating_sub(used.bytes) / u64::from(bsize);
        FsStats {
            blocks: scratch::MAX_BYTES / u64::from(bsize),
            bfree,
            bavail: if self.read_only { 0 } else { bfree },
            files: scratch::MAX_FILES as u64,
            ffree: (scratch::MAX_FILES as u64).saturating_sub(used.files as u64),
            bsize,
            namelen: 255,
            frsize: bsize,
            read_only: self.read_only,
        }
    }
}
