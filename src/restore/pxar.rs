//! Restore of a pxar archive (or one subtree, or one file) into a folder: every entry
//! kind with its mode, owner (as root), mtime (ns), xattrs, ACLs and file capabilities,
//! regular files and folders with their `chattr` flags (the quota project id is not
//! restored); hardlinks recreated; zero runs left as holes. Nothing is written outside
//! the target: names come checked from the decoder (no `/`, `.`, `..`), and every entry
//! is created through the descriptor of its opened parent folder
//! (`/proc/self/fd/N/NAME`), whose own components are never followed as symlinks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::pxar::acl;
use crate::pxar::decoder::{Archive, Entry, EntryKind};
use crate::pxar::format::{flags_to_chattr, Stat, CHATTR_MASK, INITIAL_FS_FLAGS};
use crate::util::error::{Error, IoContext, Result};
use crate::util::{sys, ReadAt};

use super::{write_sparse, RestoreOptions, RestoreReport};

/// Read file content in blocks of this size.
const BLOCK: usize = 1 << 20;

/// An opened folder of the restored tree.
struct Dir {
    file: File,
    /// Its path (for messages and hardlink sources).
    path: PathBuf,
}

impl Dir {
    /// `name` reached through this folder's descriptor.
    fn at(&self, name: &[u8]) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .join(OsStr::from_bytes(name))
    }

    fn shown(&self, name: &[u8]) -> PathBuf {
        self.path.join(OsStr::from_bytes(name))
    }
}

fn open_dir(at: &Path, shown: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(at)
        .ctx(shown.display())
}

/// A folder being restored: its entry, its opened folder, the children still to do.
struct Frame {
    entry: Entry,
    dir: Dir,
    children: std::vec::IntoIter<Entry>,
    /// Its parent folder's descriptor path and its name, for its own metadata (the
    /// restore root: `None`, the target's own path is used).
    place: Option<(PathBuf, PathBuf)>,
}

struct Restorer<'a, R: ReadAt> {
    ar: &'a Archive<R>,
    opts: &'a RestoreOptions,
    root_user: bool,
    /// Restored regular files by the stream offset of their entry, for hardlinks.
    restored: HashMap<u64, PathBuf>,
    report: RestoreReport,
    total: u64,
}

/// Restore `start` (the root, a subtree or one entry of `ar`) into the folder `target`:
/// a folder's content goes into `target`, which gets the folder's metadata; anything
/// else lands as `target/NAME`. `target` is created when missing and refused when not
/// empty, unless `overwrite`.
pub fn restore_pxar<R: ReadAt>(
    ar: &Archive<R>,
    start: &Entry,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    prepare_target(target, opts.overwrite)?;
    let mut r = Restorer {
        ar,
        opts,
        root_user: sys::geteuid() == 0,
        restored: HashMap::new(),
        report: RestoreReport::default(),
        total: 0,
    };
    let top = Dir {
        file: open_dir(target, target)?,
        path: target.to_path_buf(),
    };
    if start.is_dir() {
        r.tree(start.clone(), top)?;
    } else {
        r.entry(&top, start)?;
    }
    r.report.seconds = started.elapsed().as_secs_f64();
    Ok(r.report)
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(md) if md.is_dir() => {
            let empty = fs::read_dir(target).ctx(target.display())?.next().is_none();
            if !empty && !overwrite {
                return Err(Error::AlreadyExists {
                    what: format!(
                        "restore target {} is not empty (use --overwrite to restore into it)",
                        target.display()
                    ),
                });
            }
            Ok(())
        }
        Ok(_) => Err(Error::NotADirectory {
            what: format!("restore target {}", target.display()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .mode(0o700)
            .create(target)
            .ctx(format!("create restore target {}", target.display())),
        Err(e) => Err(Error::io(target.display(), e)),
    }
}

impl<R: ReadAt> Restorer<'_, R> {
    /// A folder and everything below it, depth first without recursion; each folder's
    /// metadata is set after its content (so its mtime stays).
    fn tree(&mut self, root: Entry, top: Dir) -> Result<()> {
        let children = self.ar.list(&root)?.into_iter();
        let mut stack = vec![Frame {
            entry: root,
            dir: top,
            children,
            place: None,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.next() else {
                let done = stack.pop().expect("a frame");
                let path = match &done.place {
                    Some((at, _)) => at.clone(),
                    None => done.dir.path.clone(),
                };
                let shown = done.dir.path.clone();
                // The folder's descriptor goes first: metadata acts on its name.
                drop(done.dir);
                self.metadata(Place::Path(&path), &shown, &done.entry)?;
                continue;
            };
            if child.is_dir() {
                let at = frame.dir.at(&child.name);
                let shown = frame.dir.shown(&child.name);
                make_dir(&at, &shown, self.opts.overwrite)?;
                let dir = Dir {
                    file: open_dir(&at, &shown)?,
                    path: shown.clone(),
                };
                let children = self.ar.list(&child)?.into_iter();
                self.report.files += 1;
                stack.push(Frame {
                    entry: child,
                    dir,
                    children,
                    place: Some((at, shown)),
                });
            } else {
                let dir = &stack.last().expect("a frame").dir;
                self.entry(dir, &child)?;
            }
        }
        Ok(())
    }

    /// One entry that is not a folder, into `dir`.
    fn entry(&mut self, dir: &Dir, e: &Entry) -> Result<()> {
        let at = dir.at(&e.name);
        let shown = dir.shown(&e.name);
        if self.opts.overwrite {
            remove_existing(&at, &shown)?;
        }
        self.report.files += 1;
        match &e.kind {
            EntryKind::Directory(_) => unreachable!("folders go through tree()"),
            EntryKind::File { .. } => {
                let out = self.file(dir, &e.name, &shown, e)?;
                self.restored.insert(e.offset, shown.clone());
                return self.metadata(Place::Open(&out, &at), &shown, e);
            }
            EntryKind::Hardlink { target_offset, .. } => {
                let target = self.ar.hardlink_target(e)?;
                match self.restored.get(target_offset) {
                    Some(src) => {
                        fs::hard_link(src, &at).ctx(format!("hardlink {}", shown.display()))?;
                        return Ok(());
                    }
                    // Its first name lies outside what is restored: a copy of the file.
                    None => {
                        let out = self.file(dir, &e.name, &shown, &target)?;
                        self.restored.insert(target.offset, shown.clone());
                        return self.metadata(Place::Open(&out, &at), &shown, &target);
                    }
                }
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &at)
                    .ctx(format!("symlink {}", shown.display()))?;
            }
            EntryKind::Device { major, minor } => {
                if !self.root_user {
                    log::warn!("{}: device nodes need root; not restored", shown.display());
                    return Ok(());
                }
                sys::mknod(&at, e.stat.mode as u32, *major, *minor)
                    .ctx(format!("mknod {}", shown.display()))?;
            }
            EntryKind::Fifo | EntryKind::Socket => {
                sys::mknod(&at, e.stat.mode as u32, 0, 0)
                    .ctx(format!("mknod {}", shown.display()))?;
            }
        }
        self.metadata(Place::Path(&at), &shown, e)
    }

    /// A regular file `name` in `dir` with `content`'s bytes, holes for zero runs; left
    /// open for its metadata (set through the descriptor: no path walked again).
    fn file(&mut self, dir: &Dir, name: &[u8], shown: &Path, content: &Entry) -> Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let mut out =
            sys::open_beneath(&dir.file, Path::new(OsStr::from_bytes(name)), flags, 0o600)
                .ctx(format!("create {}", shown.display()))?;
        // As PBS's extractor: the flags that only act on an empty file (NOCOW,
        // compression) go on first; the others at the end, in `metadata`.
        let initial = flags_to_chattr(content.stat.flags) & INITIAL_FS_FLAGS;
        if initial != 0 {
            if let Err(err) = apply_chattr(&out, initial, INITIAL_FS_FLAGS) {
                log::warn!("{}: file attributes (chattr): {err}", shown.display());
            }
        }
        let c = self.ar.content(content)?;
        let mut buf = vec![0u8; BLOCK.min(c.len() as usize)];
        let mut pos = 0u64;
        // Whether the last bytes were skipped as a hole: only then does the length need
        // setting (one syscall per file saved: a tree's files are mostly small).
        let mut ends_in_hole = false;
        while pos < c.len() {
            let n = self.ar.read_content(&c, pos, &mut buf)?;
            if n == 0 {
                return Err(Error::format(
                    shown.display(),
                    format!("content ends at {pos} of {} bytes", c.len()),
                ));
            }
            let skipped = write_sparse(&mut out, &buf[..n], shown)?;
            self.report.sparse_bytes += skipped;
            ends_in_hole = skipped > 0 && crate::restore::ends_in_hole(&buf[..n]);
            pos += n as u64;
            self.report.bytes += n as u64;
            self.total += n as u64;
            if let Some(p) = self.opts.progress {
                // The total is unknown (it would take a pass over the metadata).
                p(self.total, 0);
            }
        }
        if ends_in_hole {
            out.set_len(c.len()).ctx(shown.display())?;
        }
        Ok(out)
    }

    /// Owner, mode, xattrs, ACLs, capabilities, mtime and `chattr` flags, in that order:
    /// chown clears setuid bits and capabilities, chmod after it keeps the bits, the
    /// capability goes last of the attributes, then the time; the flags (regular files
    /// and folders, a folder's after its content) go very last, as in PBS's extractor,
    /// because IMMUTABLE and APPEND refuse any later change.
    fn metadata(&self, place: Place, shown: &Path, e: &Entry) -> Result<()> {
        let st: &Stat = &e.stat;
        let symlink = st.is_symlink();
        let at = place.path();
        if self.root_user {
            match place {
                Place::Open(f, _) => std::os::unix::fs::fchown(f, Some(st.uid), Some(st.gid)),
                Place::Path(at) => std::os::unix::fs::lchown(at, Some(st.uid), Some(st.gid)),
            }
            .ctx(format!("chown {}", shown.display()))?;
        }
        if !symlink {
            let mode = fs::Permissions::from_mode(st.permissions());
            match place {
                Place::Open(f, _) => f.set_permissions(mode),
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
            if let Err(err) = sys::set_xattr(at, name, value) {
                // What the file system or our rights refuse is reported, not fatal.
                log::warn!(
                    "{}: extended attribute {}: {err}",
                    shown.display(),
                    String::from_utf8_lossy(name)
                );
            }
        }
        match place {
            Place::Open(f, _) => sys::set_times_fd(f, st.mtime_secs, st.mtime_nanos),
            Place::Path(at) => sys::set_times(at, st.mtime_secs, st.mtime_nanos),
        }
        .ctx(format!("set times of {}", shown.display()))?;
        if st.flags != 0 && (st.is_regular() || st.is_dir()) {
            let want = flags_to_chattr(st.flags);
            let applied = match place {
                Place::Open(f, _) => apply_chattr(f, want, CHATTR_MASK),
                Place::Path(at) => {
                    open_for_flags(at).and_then(|f| apply_chattr(&f, want, CHATTR_MASK))
                }
            };
            if let Err(err) = applied {
                // What the file system or our rights refuse is reported, not fatal.
                log::warn!("{}: file attributes (chattr): {err}", shown.display());
            }
        }
        Ok(())
    }
}

/// Where an entry's metadata goes: a regular file still open from its writing (and its
/// path, for extended attributes), or any entry by its path.
#[derive(Clone, Copy)]
enum Place<'a> {
    Open(&'a File, &'a Path),
    Path(&'a Path),
}

impl Place<'_> {
    fn path(&self) -> &Path {
        match self {
            Place::Open(_, at) | Place::Path(at) => at,
        }
    }
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
fn apply_chattr(file: &File, want: u32, mask: u32) -> io::Result<()> {
    let current = sys::get_inode_flags(file)?;
    let new = (want & mask) | (current & !mask);
    if new == current {
        return Ok(());
    }
    sys::set_inode_flags(file, new)
}

/// A folder at `at`: made, or with `overwrite` an existing folder reused (never a
/// symlink to one).
fn make_dir(at: &Path, shown: &Path, overwrite: bool) -> Result<()> {
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
fn remove_existing(at: &Path, shown: &Path) -> Result<()> {
    match fs::symlink_metadata(at) {
        Ok(md) if md.is_dir() => fs::remove_dir(at).ctx(format!("remove {}", shown.display())),
        Ok(_) => fs::remove_file(at).ctx(format!("remove {}", shown.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(shown.display(), e)),
    }
}
