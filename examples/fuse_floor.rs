//! The floor any fuser-served mount pays for a listing (scripts/bench.sh): serves the
//! shape of a real folder tree (names, kinds, sizes, modes, times: read once at start)
//! from memory, with the same fuser version, threads and INIT capabilities as
//! `pbsfs mount` (READDIRPLUS, no OPENDIR), and no extended attributes. A listing
//! through it is only FUSE round trips: `ls -lR` of it bounds from below what any FUSE
//! mount of that tree costs on this machine. Its files have no content.
//!   cargo run --release --example fuse_floor -- SOURCE_DIR MOUNTPOINT
//! Serves in the foreground until unmounted.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyOpen,
    ReplyXattr, Request,
};

/// As long as pbsfs gives pxar entries: the tree never changes.
const TTL: Duration = Duration::from_secs(3600);

struct Node {
    attr: FileAttr,
    name: OsString,
    children: Vec<u64>,
    by_name: HashMap<OsString, u64>,
}

struct Floor {
    nodes: Vec<Node>,
}

fn kind(m: &std::fs::Metadata) -> FileType {
    let t = m.file_type();
    if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    }
}

fn attr_of(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let mtime = UNIX_EPOCH + Duration::new(m.mtime() as u64, m.mtime_nsec() as u32);
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.size().div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: kind(m),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Floor {
    /// Read the tree under `root` (inode 1) depth first, each folder's entries by name.
    fn scan(root: &Path) -> Floor {
        let m = std::fs::symlink_metadata(root).expect("SOURCE_DIR");
        let mut f = Floor {
            nodes: vec![Node {
                attr: attr_of(1, &m),
                name: ".".into(),
                children: vec![],
                by_name: HashMap::new(),
            }],
        };
        f.add_children(0, root);
        f
    }

    fn add_children(&mut self, at: usize, dir: &Path) {
        let mut names: Vec<OsString> = std::fs::read_dir(dir)
            .expect("read a folder")
            .map(|e| e.expect("a folder entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let m = std::fs::symlink_metadata(&path).expect("stat an entry");
            let ino = self.nodes.len() as u64 + 1;
            self.nodes.push(Node {
                attr: attr_of(ino, &m),
                name: name.clone(),
                children: vec![],
                by_name: HashMap::new(),
            });
            self.nodes[at].children.push(ino);
            self.nodes[at].by_name.insert(name, ino);
            if m.is_dir() {
                self.add_children(ino as usize - 1, &path);
            }
        }
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        self.nodes.get((ino.0 as usize).wrapping_sub(1))
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.node(parent).and_then(|p| p.by_name.get(name)) {
            Some(&ino) => reply.entry(&TTL, &self.nodes[ino as usize - 1].attr, Generation(0)),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(n) => reply.attr(&TTL, &n.attr),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::from_i32(libc::ENOENT));
        };
        for (i, &c) in n.children.iter().enumerate().skip(offset as usize) {
            let child = &self.nodes[c as usize - 1];
            if reply.add(INodeNo(c), i as u64 + 1, child.attr.kind, &child.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(n) = self.node(ino) else {
            return reply.error(Errno::from_i32(libc::ENOENT));
        };
        for (i, &c) in n.children.iter().enumerate().skip(offset as usize) {
            let child = &self.nodes[c as usize - 1];
            if reply.add(
                INodeNo(c),
                i as u64 + 1,
                &child.name,
                &TTL,
                &child.attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: fuse_floor SOURCE_DIR MOUNTPOINT";
    let source = args.next().expect(usage);
    let mountpoint = args.next().expect(usage);
    let fs = Floor::scan(Path::new(&source));
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("fuse_floor".into()),
        fuser::MountOption::RO,
    ];
    // As `pbsfs mount` by default: at least 4 serving threads, each with its own fd.
    // FLOOR_THREADS=N (and FLOOR_CLONE_FD=0) try other ways of serving.
    let threads = std::env::var("FLOOR_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    config.n_threads = Some(threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(4)
    }));
    config.clone_fd = std::env::var("FLOOR_CLONE_FD").map_or(true, |v| v != "0");
    fuser::mount(fs, &mountpoint, &config).expect("mount");
}
