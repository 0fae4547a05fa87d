//! The FUSE adapter, the only file that imports fuser: it converts requests to `vfs`
//! calls and results to replies, and negotiates the kernel connection. No logic here:
//! every errno comes from `Error::errno()` through `PbsFs::errno`, which also logs.
//! Over 500 lines because fuser's `Filesystem` is one trait impl of ~30 methods, each a
//! few lines of translation; splitting it would scatter one table.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::store::chunks::cache::ChunkCache;
use crate::util::error::{Error, IoContext, Result};
use crate::vfs::memo::Memo;
use crate::vfs::{Attr, Caller, Inval, Kind, Opened, SetAttr, Vfs};

/// Largest read the kernel is asked to send (it caps this at its own max_pages).
const MAX_READAHEAD: u32 = 4 << 20;

/// How to mount, in fuser-free terms (parsed from `-o` by the mount command).
#[derive(Debug, Clone, Default)]
pub struct MountOpts {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub auto_unmount: bool,
    pub fsname: String,
    pub subtype: Option<String>,
    /// Kernel flags passed as-is: dev, nodev, suid, nosuid, exec, noexec, atime, noatime,
    /// sync, async, dirsync.
    pub flags: Vec<String>,
    /// FUSE worker threads.
    pub threads: usize,
}

/// A served mount: unmount it, or wait for it to end.
pub struct MountSession {
    unmounter: fuser::SessionUnmounter,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    mountpoint: std::path::PathBuf,
    /// What the mount has served so far (`kill -USR1` logs it, and unmounting does).
    pub stats: Arc<Stats>,
}

impl MountSession {
    /// Unmount (the serving threads then end).
    pub fn unmount(&mut self) -> Result<()> {
        self.unmounter
            .unmount()
            .ctx(format!("unmount {}", self.mountpoint.display()))
    }

    /// Wait until the serving threads have ended (after an unmount from anywhere).
    pub fn join(self) -> Result<()> {
        match self.thread.join() {
            Ok(r) => r.ctx(format!("serving {}", self.mountpoint.display())),
            Err(_) => Err(Error::other(
                format!("serving {}", self.mountpoint.display()),
                "a FUSE thread panicked",
            )),
        }
    }
}

/// Mount `vfs` on `mountpoint` and serve it on background threads. Returns once the
/// kernel's INIT is answered, so the mount answers requests. `on_exit` runs when
/// serving ends, however the mount went away.
pub fn mount(
    vfs: Vfs,
    mountpoint: &Path,
    opts: &MountOpts,
    on_exit: impl FnOnce() + Send + 'static,
) -> Result<MountSession> {
    use fuser::MountOption as M;
    let mut o = vec![M::FSName(opts.fsname.clone())];
    let subtype = opts.subtype.clone().unwrap_or_else(|| "pbsfs".into());
    // The type findmnt and mount(8) show is fuse.SUBTYPE. fuser passes its Subtype
    // option to fusermount3 only, not to the mount(2) it makes itself as root; the
    // kernel takes `subtype=` there too, so root hands it over as a kernel option. (Never
    // both: two subtypes are refused.)
    o.push(if crate::util::sys::geteuid() == 0 {
        M::CUSTOM(format!("subtype={subtype}"))
    } else {
        M::Subtype(subtype)
    });
    o.push(if opts.read_only { M::RO } else { M::RW });
    if opts.default_permissions {
        o.push(M::DefaultPermissions);
    }
    if opts.auto_unmount {
        o.push(M::AutoUnmount);
    }
    for f in &opts.flags {
        o.push(match f.as_str() {
            "dev" => M::Dev,
            "nodev" => M::NoDev,
            "suid" => M::Suid,
            "nosuid" => M::NoSuid,
            "exec" => M::Exec,
            "noexec" => M::NoExec,
            "atime" => M::Atime,
            "noatime" => M::NoAtime,
            "sync" => M::Sync,
            "async" => M::Async,
            "dirsync" => M::DirSync,
            other => M::CUSTOM(other.to_string()),
        });
    }
    let mut config = fuser::Config::default();
    config.mount_options = o;
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else if opts.allow_root {
        fuser::SessionACL::RootAndOwner
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    // Invalidations of what changes through the mount go to a thread of their own: the
    // kernel may wait, before it applies one, for the very request that caused it.
    let (tx, rx) = std::sync::mpsc::channel::<Inval>();
    vfs.set_invalidator(tx);
    let stats = Arc::new(Stats {
        served: Served::default(),
        bytes: AtomicU64::new(0),
        cache: vfs.shared_chunk_cache(),
    });
    let notifier_slot = Arc::new(OnceLock::new());
    let mut session = fuser::Session::new(
        PbsFs {
            vfs,
            no_opendir: false,
            notifier: Arc::clone(&notifier_slot),
            logged: Memo::new(LOGGED_ERRORS),
            stats: Arc::clone(&stats),
        },
        mountpoint,
        &config,
    )
    .ctx(format!("mount on {}", mountpoint.display()))?;
    let notifier = session.notifier();
    let _ = notifier_slot.set(notifier.clone());
    std::thread::Builder::new()
        .name("pbsfs-inval".into())
        .spawn(move || {
            // Ends when the vfs (the only sender) goes with the session.
            for i in rx {
                let r = match &i {
                    Inval::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
                };
                match r {
                    Ok(()) => log::trace!("invalidated {i:?}"),
                    Err(e) => log::debug!("invalidation {i:?}: {e}"),
                }
            }
        })
        .ctx("start the invalidation thread")?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("pbsfs-session".into())
        .spawn(move || {
            let r = session.run();
            on_exit();
            r
        })
        .ctx("start the FUSE session")?;
    Ok(MountSession {
        unmounter,
        thread,
        mountpoint: mountpoint.to_path_buf(),
        stats,
    })
}

struct PbsFs {
    vfs: Vfs,
    /// The kernel reads folders without OPENDIR and RELEASEDIR once OPENDIR answers
    /// ENOSYS (`FUSE_NO_OPENDIR_SUPPORT`): two requests fewer per folder listed.
    no_opendir: bool,
    /// For the one invalidation sent from a request (a refused save's FLUSH); set
    /// once the session exists.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// Errors already logged (by their message), so each is logged once.
    logged: Memo<String, ()>,
    stats: Arc<Stats>,
}

/// Requests served, bytes of file content served, and the verified-chunk cache's work.
pub struct Stats {
    served: Served,
    bytes: AtomicU64,
    cache: Arc<ChunkCache>,
}

impl Stats {
    /// One line for the log: `requests served: N (lookup .., ..); ...`.
    pub fn summary(&self) -> String {
        let c = &self.cache;
        format!(
            "requests served: {}; content bytes served: {}; chunk cache: {} hits, {} misses, \
             {} chunks read and verified, {} of {} bytes in use",
            self.served.summary(),
            self.bytes.load(Ordering::Relaxed),
            c.hits(),
            c.misses(),
            c.disk_reads(),
            c.cached_bytes(),
            c.capacity()
        )
    }
}

/// Requests served, by operation: logged when the mount ends (`requests served: ...`).
const OPS: [&str; 12] = [
    "lookup",
    "getattr",
    "readdir",
    "readdirplus",
    "opendir",
    "getxattr",
    "readlink",
    "open",
    "read",
    "write",
    "forget",
    "other",
];

#[derive(Default)]
struct Served([AtomicU64; OPS.len()]);

impl Served {
    fn count(&self, op: &str) {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self) -> String {
        let n: Vec<u64> = self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let parts: Vec<String> = OPS
            .iter()
            .zip(&n)
            .filter(|(_, n)| **n > 0)
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        format!("{} ({})", n.iter().sum::<u64>(), parts.join(", "))
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::CharDevice => FileType::CharDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// Attributes of `.` and `..` in a READDIRPLUS reply (the kernel skips both).
fn dot_attr(ino: u64) -> FileAttr {
    attr(&Attr {
        ino,
        kind: Kind::Dir,
        size: 0,
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: UNIX_EPOCH,
        nlink: 2,
        rdev: 0,
    })
}

fn open_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    f
}

/// Distinct I/O errors remembered so each is logged once.
const LOGGED_ERRORS: usize = 4096;

/// The one place an error becomes a reply, and where it is logged: damage (EIO) once per
/// object, with the reason, at error level; everyday answers (ENOENT to `ls -l` and
/// editors' probes, ENODATA, EEXIST) at trace; the rest at debug (the vfs logs failed
/// commits itself).
impl PbsFs {
    fn errno(&self, op: &str, e: &Error) -> Errno {
        let n = e.errno();
        match n {
            libc::ENOENT | libc::ENODATA | libc::EEXIST => log::trace!("{op}: {e}"),
            libc::EIO => {
                if self.logged.first_time(e.to_string(), ()) {
                    log::error!("{e}");
                }
            }
            _ => log::debug!("{op}: {e} (errno {n})"),
        }
        Errno::from_i32(n)
    }
}

/// The xattr protocol: size 0 asks for the length; a buffer too small is ERANGE.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

/// Replies pbsfs gives without asking the vfs (extended attributes, `access`).
fn refuse(op: &str, errno_value: i32) -> Errno {
    log::trace!("{op}: errno {errno_value}");
    Errno::from_i32(errno_value)
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for PbsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            log::warn!("kernel lacks {missing:?}: O_TRUNC arrives as a separate truncation");
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        // Symlink targets never change for an inode (`latest` is keyed by its target,
        // pxar entries by their archive): the kernel may keep them.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        // `ls -l` gets names and attributes in one request per buffer, not a LOOKUP
        // (and GETATTR) per name; AUTO lets the kernel use plain READDIR where no
        // attributes are wanted.
        if let Err(missing) = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO)
        {
            log::debug!("kernel lacks {missing:?}: listings without attributes");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        log::info!("{}", self.stats.summary());
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.stats.served.count("lookup");
        match self.vfs.lookup(parent.0, name) {
            Ok(e) => reply.entry_with_ttls(&e.ttl, &e.entry_ttl, &attr(&e.attr), Generation(0)),
            Err(e) => reply.error(self.errno("lookup", &e)),
        }
    }

    // fuser's default batch_forget calls this once per node (its ForgetOne is private).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.stats.served.count("forget");
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.stats.served.count("getattr");
        match self.vfs.getattr(ino.0) {
            Ok(e) => reply.attr(&e.ttl, &attr(&e.attr)),
            Err(e) => reply.error(self.errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.stats.served.count("other");
        let set = SetAttr {
            size,
            mode,
            uid,
            gid,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.vfs.setattr(ino.0, fh.map(|f| f.0), set, caller(req)) {
            Ok(e) => reply.attr(&e.ttl, &attr(&e.attr)),
            Err(e) => reply.error(self.errno("setattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.stats.served.count("readlink");
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno("readlink", &e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.stats.served.count("other");
        reply.error(self.errno("mknod", &self.vfs.refuse_change("mknod")));
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.stats.served.count("other");
        reply.error(self.errno("mkdir", &self.vfs.refuse_change("mkdir")));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stats.served.count("other");
        match self.vfs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("unlink", &e)),
        }
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.stats.served.count("other");
        reply.error(self.errno("rmdir", &self.vfs.refuse_change("rmdir")));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        self.stats.served.count("other");
        reply.error(self.errno("symlink", &self.vfs.refuse_change("symlink")));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        match self
            .vfs
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("rename", &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.stats.served.count("other");
        reply.error(self.errno("link", &self.vfs.refuse_change("link")));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.stats.served.count("open");
        match self.vfs.open(ino.0, flags.0, caller(req)) {
            Ok(o) => reply.opened(FileHandle(o.fh), open_flags(&o)),
            Err(e) => reply.error(self.errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.stats.served.count("read");
        // An archive's READ is written to the kernel straight from the cached chunk.
        match self.vfs.read_shared(fh.0, offset, size) {
            Ok(d) => {
                let data = d.as_ref();
                self.stats
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.data(data)
            }
            Err(e) => reply.error(self.errno("read", &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.stats.served.count("write");
        match self.vfs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.errno("write", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        match self.vfs.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => {
                // A refused save: the kernel sized the file by the writes it let
                // through and clamps reads to that until told otherwise. Told before
                // close() returns, so the next reader sees the committed size. (An
                // inode invalidation takes no lock FLUSH's caller holds.)
                if let Some(n) = self.notifier.get() {
                    if let Err(err) = n.inval_inode(ino, 0, 0) {
                        log::debug!("invalidation of inode {} at flush: {err}", ino.0);
                    }
                }
                reply.error(self.errno("flush", &e))
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        self.vfs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        match self.vfs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("fsync", &e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.stats.served.count("opendir");
        if self.no_opendir {
            // Only folders get OPENDIR; the listing needs no handle (`NO_HANDLE`).
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        match self.vfs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(self.errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.stats.served.count("readdir");
        match self.vfs.readdir(ino.0, fh.0, offset) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino), e.next_offset, kind(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(self.errno("readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.stats.served.count("readdirplus");
        let r = self.vfs.readdirplus(ino.0, fh.0, offset, |d, e| {
            let (a, ttl) = match e {
                Some(e) => (attr(&e.attr), e.ttl.min(e.entry_ttl)),
                // `.` and `..`: the kernel takes neither attributes nor a reference.
                None => (dot_attr(d.ino), Duration::ZERO),
            };
            reply.add(
                INodeNo(a.ino.0),
                d.next_offset,
                &d.name,
                &ttl,
                &a,
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("readdirplus", &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        self.vfs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.stats.served.count("other");
        let s = self.vfs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    /// Extended attributes are not offered: ACL writes must fail so `sed -i` and `mv`
    /// fall back to chmod (editor-saves.md).
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.stats.served.count("other");
        reply.error(refuse("setxattr", libc::EOPNOTSUPP));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.stats.served.count("getxattr");
        match self.vfs.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(self.errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.stats.served.count("other");
        match self.vfs.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(self.errno("listxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.stats.served.count("other");
        reply.error(refuse("removexattr", libc::EOPNOTSUPP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.stats.served.count("other");
        // ENOSYS: the kernel stops asking and allows; permissions are checked on open.
        reply.error(refuse("access", libc::ENOSYS));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.stats.served.count("other");
        match self.vfs.create(parent.0, name, mode, flags, caller(req)) {
            Ok((e, o)) => reply.created(
                &e.ttl,
                &attr(&e.attr),
                Generation(0),
                FileHandle(o.fh),
                open_flags(&o),
            ),
            Err(e) => reply.error(self.errno("create", &e)),
        }
    }
}
