//! The directory walk of a pxar backup: each folder opened relative to its parent
//! (`openat2` beneath it, no symlink followed), listed, filtered by the exclude patterns
//! and sorted by name bytes; entries encoded in that order and recorded in the catalog.
//! Iterative (one open folder per level, no recursion), so depth is bounded by file
//! descriptors, not by the stack. A file that cannot be read or changes while read is
//! a warning naming its path, never the end of the backup.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::backup::exclude::{cli_file, match_list, parse_pxarexclude, MatchType, Pattern};
use crate::backup::pxar_meta::{device_numbers, metadata_of};
use crate::backup::pxar_out::{FileCounts, Inject, Out};
use crate::backup::pxar_prev::{PrevDir, Previous};
use crate::pxar::catalog::{CatalogAttr, CatalogWriter};
use crate::pxar::encoder::{Encoder, LinkOffset, Metadata};
use crate::pxar::format::{Stat, S_IFREG};
use crate::util::error::{Error, IoContext, Result};
use crate::util::sys::{open_beneath, XattrSource};

const CLI_FILE: &[u8] = b".pxarexclude-cli";
const EXCLUDE_FILE: &[u8] = b".pxarexclude";
/// A `.pxarexclude` larger than this is ignored (with a warning).
const MAX_EXCLUDE_FILE: u64 = 1 << 20;

enum Listed {
    /// A directory entry and its type (from the listing: no `lstat` per entry, as a
    /// regular file or folder is opened and `fstat`ed anyway).
    Entry {
        name: Vec<u8>,
        ft: std::fs::FileType,
    },
    /// The `.pxarexclude-cli` file the walk adds to the root.
    CliFile,
    Taken,
}

impl Listed {
    fn name(&self) -> &[u8] {
        match self {
            Listed::Entry { name, .. } => name,
            Listed::CliFile => CLI_FILE,
            Listed::Taken => b"",
        }
    }
}

/// An open folder being encoded.
struct Frame {
    dir: File,
    entries: Vec<Listed>,
    next: usize,
    /// The walk's path and pattern count outside this folder.
    path_len: usize,
    patterns_len: usize,
    /// The previous archive's entries of this folder (metadata change detection).
    prev: Option<PrevDir>,
}

pub(super) struct Walker<'a, C: Write> {
    root: &'a Path,
    /// The current entry's path from the archive root: `""` for the root, else `/a/b`.
    path: Vec<u8>,
    patterns: Vec<Pattern>,
    cli_patterns: usize,
    root_dev: u64,
    all_file_systems: bool,
    /// First name of each multiply linked file: (device, inode) -> (path, offset).
    hardlinks: HashMap<(u64, u64), (Vec<u8>, LinkOffset)>,
    catalog: &'a mut CatalogWriter<C>,
    /// The previous archive, in metadata change detection.
    prev: Option<Previous>,
    /// Writing a split archive: no `.pxarexclude-cli` file (the patterns are in the
    /// PRELUDE), as the PBS client does.
    split: bool,
    pub warnings: u64,
    /// Files read and files referenced from the previous archive.
    pub counts: FileCounts,
}

fn proc_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

fn open_child(dir: &File, name: &[u8], flags: i32) -> std::io::Result<File> {
    let base = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY | flags;
    let name = Path::new(OsStr::from_bytes(name));
    // O_NOATIME keeps backups from touching atimes; it needs ownership (or root).
    match open_beneath(dir, name, base | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_beneath(dir, name, base, 0),
        other => other,
    }
}

impl<'a, C: Write> Walker<'a, C> {
    pub(super) fn new(
        root: &'a Path,
        cli: &[Pattern],
        all_file_systems: bool,
        catalog: &'a mut CatalogWriter<C>,
    ) -> Walker<'a, C> {
        Walker {
            root,
            path: Vec::new(),
            patterns: cli.to_vec(),
            cli_patterns: cli.len(),
            root_dev: 0,
            all_file_systems,
            hardlinks: HashMap::new(),
            catalog,
            prev: None,
            split: false,
            warnings: 0,
            counts: FileCounts::default(),
        }
    }

    /// Reference unchanged files' payloads in `prev` (metadata change detection).
    pub(super) fn with_previous(mut self, prev: Option<Previous>) -> Self {
        self.prev = prev;
        self
    }

    /// The current entry, for messages: the source folder joined with its path.
    fn shown(&self) -> String {
        let mut full = self.root.as_os_str().as_bytes().to_vec();
        full.extend_from_slice(&self.path);
        format!("{:?}", Path::new(OsStr::from_bytes(&full)))
    }

    fn warn(&mut self, why: impl std::fmt::Display) {
        self.warnings += 1;
        log::warn!("{}: {why}", self.shown());
    }

    /// Encode the tree below the opened folder `root_dir` into `out`.
    pub(super) fn run<W: Write>(&mut self, root_dir: File, out: W) -> Result<W> {
        self.walk(root_dir, |meta| Encoder::new(out, meta))?
            .finish()
    }

    /// Encode the tree as a split archive: metadata into `out`, contents into
    /// `payload`, `prelude` after the FORMAT_VERSION.
    pub(super) fn run_split<W: Write, P: Inject>(
        &mut self,
        root_dir: File,
        out: W,
        payload: P,
        prelude: Option<&[u8]>,
    ) -> Result<(W, P)> {
        self.split = true;
        self.walk(root_dir, |meta| {
            Encoder::new_split(out, payload, meta, prelude)
        })?
        .finish_split()
    }

    fn walk<W: Write, P: Inject>(
        &mut self,
        root_dir: File,
        start: impl FnOnce(&Metadata) -> Result<Encoder<W, P>>,
    ) -> Result<Encoder<W, P>> {
        let md = root_dir.metadata().ctx(self.root.display())?;
        if !md.is_dir() {
            return Err(Error::NotADirectory {
                what: self.root.display().to_string(),
            });
        }
        self.root_dev = md.dev();
        let meta = self.metadata(&md, XattrSource::File(&root_dir));
        let mut out = Out::new(start(&meta)?, self.prev.take());
        let entries = self.list(&root_dir, true)?;
        let mut stack = vec![Frame {
            dir: root_dir,
            entries,
            next: 0,
            path_len: 0,
            patterns_len: self.cli_patterns,
            prev: out.previous().and_then(Previous::root),
        }];
        while let Some(top) = stack.last_mut() {
            if top.next == top.entries.len() {
                let done = stack.pop().expect("a top frame");
                self.path.truncate(done.path_len);
                self.patterns.truncate(done.patterns_len);
                if !stack.is_empty() {
                    out.finish_directory()?;
                    self.catalog.end_directory()?;
                }
                continue;
            }
            let item = std::mem::replace(&mut top.entries[top.next], Listed::Taken);
            top.next += 1;
            let path_len = self.path.len();
            self.path.push(b'/');
            self.path.extend_from_slice(item.name());
            match self.add(&mut out, &top.dir, top.prev.as_ref(), item, path_len)? {
                Some(frame) => stack.push(frame),
                None => self.path.truncate(path_len),
            }
        }
        let (enc, counts, warnings) = out.finish()?;
        self.counts = counts;
        self.warnings += warnings;
        Ok(enc)
    }

    fn metadata(&mut self, md: &std::fs::Metadata, src: XattrSource) -> Metadata {
        let mut problems = Vec::new();
        let m = metadata_of(md, src, &mut problems);
        for p in problems {
            self.warn(p);
        }
        m
    }

    /// The entries of an opened folder, its `.pxarexclude` applied, sorted by name.
    fn list(&mut self, dir: &File, root: bool) -> Result<Vec<Listed>> {
        self.read_pxarexclude(dir);
        let mut out = Vec::new();
        let iter = match std::fs::read_dir(proc_path(dir)) {
            Ok(it) => it,
            Err(e) if !root => {
                self.warn(format!("folder not read: {e}"));
                return Ok(out);
            }
            Err(e) => return Err(Error::io(self.root.display(), e)),
        };
        for entry in iter {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.warn(format!("listing stopped early: {e}"));
                    break;
                }
            };
            let name = entry.file_name().as_bytes().to_vec();
            if root && name == CLI_FILE {
                continue;
            }
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let len = self.path.len();
                    self.path.push(b'/');
                    self.path.extend_from_slice(&name);
                    self.warn(format!("not stored: {e}"));
                    self.path.truncate(len);
                    continue;
                }
            };
            let mut full = self.path.clone();
            full.push(b'/');
            full.extend_from_slice(&name);
            if match_list(&self.patterns, &full, ft.is_dir()) == Some(MatchType::Exclude) {
                continue;
            }
            out.push(Listed::Entry { name, ft });
        }
        if root && self.cli_patterns > 0 && !self.split {
            out.push(Listed::CliFile);
        }
        out.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    fn read_pxarexclude(&mut self, dir: &File) {
        let mut f = match open_child(dir, EXCLUDE_FILE, 0) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
            Err(e) => return self.warn(format!(".pxarexclude not read: {e}")),
        };
        let mut content = Vec::new();
        let res = f.metadata().and_then(|md| {
            if !md.is_file() || md.len() > MAX_EXCLUDE_FILE {
                return Err(std::io::Error::other("not a regular file of at most 1 MiB"));
            }
            (&mut f).take(MAX_EXCLUDE_FILE).read_to_end(&mut content)
        });
        if let Err(e) = res {
            return self.warn(format!(".pxarexclude ignored: {e}"));
        }
        let dir_path = self.path.clone();
        let mut bad = Vec::new();
        let list = parse_pxarexclude(&content, &dir_path, &mut |e| bad.push(e));
        for e in bad {
            self.warn(format!(".pxarexclude: {e}"));
        }
        self.patterns.extend(list);
    }

    /// Encode one entry; a folder to descend into comes back as its frame.
    fn add<W: Write, P: Inject>(
        &mut self,
        out: &mut Out<W, P>,
        parent: &File,
        parent_prev: Option<&PrevDir>,
        item: Listed,
        path_len: usize,
    ) -> Result<Option<Frame>> {
        let (name, ft) = match item {
            Listed::Entry { name, ft } => (name, ft),
            Listed::CliFile => {
                let content = cli_file(&self.patterns[..self.cli_patterns]);
                let meta = Metadata {
                    stat: Stat {
                        mode: S_IFREG | 0o600,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                self.catalog.add_file(CLI_FILE, content.len() as u64, 0)?;
                out.add_file(CLI_FILE, &meta, &content)?;
                return Ok(None);
            }
            Listed::Taken => return Ok(None),
        };
        if ft.is_file() {
            self.add_file(out, parent, parent_prev, &name)?;
        } else if ft.is_dir() {
            return self.add_dir(out, parent, parent_prev, &name, path_len);
        } else {
            let at = proc_path(parent).join(OsStr::from_bytes(&name));
            let md = match std::fs::symlink_metadata(&at) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    self.warn(format!("not stored: {e}"));
                    return Ok(None);
                }
            };
            let ft = md.file_type();
            if ft.is_file() || ft.is_dir() {
                self.warn("changed type while being backed up: not stored");
                return Ok(None);
            }
            let meta = self.metadata(&md, XattrSource::NoFollow(&at));
            if ft.is_symlink() {
                let target = match std::fs::read_link(&at) {
                    Ok(t) => t,
                    Err(e) => {
                        self.warn(format!("symlink not stored: {e}"));
                        return Ok(None);
                    }
                };
                self.catalog.add_entry(&name, CatalogAttr::Symlink)?;
                out.add_symlink(&name, &meta, target.as_os_str().as_bytes())?;
            } else if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = device_numbers(md.rdev());
                let kind = if ft.is_char_device() {
                    CatalogAttr::CharDevice
                } else {
                    CatalogAttr::BlockDevice
                };
                self.catalog.add_entry(&name, kind)?;
                out.add_device(&name, &meta, major, minor)?;
            } else if ft.is_fifo() || ft.is_socket() {
                let kind = if ft.is_fifo() {
                    CatalogAttr::Fifo
                } else {
                    CatalogAttr::Socket
                };
                self.catalog.add_entry(&name, kind)?;
                out.add_fifo_or_socket(&name, &meta)?;
            } else {
                self.warn(format!("unknown file type {:o}: not stored", md.mode()));
            }
        }
        Ok(None)
    }

    fn add_dir<W: Write, P: Inject>(
        &mut self,
        out: &mut Out<W, P>,
        parent: &File,
        parent_prev: Option<&PrevDir>,
        name: &[u8],
        path_len: usize,
    ) -> Result<Option<Frame>> {
        let dir = match open_child(parent, name, libc::O_DIRECTORY) {
            Ok(d) => d,
            Err(e) => {
                self.warn(format!("folder not stored: {e}"));
                return Ok(None);
            }
        };
        let md = dir.metadata().ctx(self.shown())?;
        let meta = self.metadata(&md, XattrSource::File(&dir));
        out.create_directory(name, &meta)?;
        self.catalog.start_directory(name)?;
        let prev = match (parent_prev.and_then(|p| p.get(name)), out.previous()) {
            (Some(e), Some(archive)) => archive.list(e),
            _ => None,
        };
        let patterns_len = self.patterns.len();
        let entries = if md.dev() != self.root_dev && !self.all_file_systems {
            log::info!("{}: skipping mount point", self.shown());
            Vec::new()
        } else {
            self.list(&dir, false)?
        };
        Ok(Some(Frame {
            dir,
            entries,
            next: 0,
            path_len,
            patterns_len,
            prev,
        }))
    }

    fn add_file<W: Write, P: Inject>(
        &mut self,
        out: &mut Out<W, P>,
        parent: &File,
        parent_prev: Option<&PrevDir>,
        name: &[u8],
    ) -> Result<()> {
        let mut file = match open_child(parent, name, 0) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.warn("vanished while being backed up: not stored");
                return Ok(());
            }
            Err(e) => {
                self.warn(format!("not stored: {e}"));
                return Ok(());
            }
        };
        let md = match file.metadata() {
            Ok(md) if md.is_file() => md,
            Ok(_) => {
                self.warn("changed type while being backed up: not stored");
                return Ok(());
            }
            Err(e) => {
                self.warn(format!("not stored: {e}"));
                return Ok(());
            }
        };
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some((target, offset)) = self.hardlinks.get(&key) {
                self.catalog.add_entry(name, CatalogAttr::Hardlink)?;
                return out.add_hardlink(name, &target[1..], *offset);
            }
        }
        let meta = self.metadata(&md, XattrSource::File(&file));
        let size = md.len();
        self.catalog.add_file(name, size, md.mtime())?;
        // A file with other names is read: they point at its offset, which only a file
        // written now has.
        let unchanged = match (parent_prev, out.previous()) {
            (Some(listing), Some(prev)) if md.nlink() == 1 => listing
                .get(name)
                .and_then(|e| prev.unchanged(e, &meta, size)),
            _ => None,
        };
        if let Some(old) = unchanged {
            let shown = self.shown();
            return out.unchanged_file(name, &meta, md, file, shown, old);
        }
        let offset = out.read_file(name, &meta, &md, &mut file, &self.shown())?;
        if md.nlink() > 1 {
            self.hardlinks.insert(key, (self.path.clone(), offset));
        }
        Ok(())
    }
}
