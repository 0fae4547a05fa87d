//! The mount's view of the datastore (ARCHITECTURE §2): node keys, what each directory
//! lists, name lookup, and the attributes of every node kind. Everything is read from
//! disk on demand, so a snapshot made or forgotten meanwhile shows on the next listing.
//! For now pxar archives (`.pxar.didx`, `.mpxar.didx`, `.ppxar.didx`) show as read-only
//! files holding their raw stream (`root.pxar`, `root.mpxar`, `root.ppxar`); browsing them
//! as directories is a later issue.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::format::manifest::MANIFEST_BLOB_NAME;
use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::store::{GROUP_NOTES, GROUP_OWNER};
use crate::util::error::{Error, IoContext, Result};

use super::{Attr, Kind, Vfs};

/// Entry and attribute TTL of directories and read-only made-up files: short, so the view
/// follows the datastore.
pub const DIR_TTL: Duration = Duration::from_secs(1);
/// Archive content never changes for a given key (the key holds its checksum).
pub const ARCHIVE_TTL: Duration = Duration::from_secs(3600);
/// Metadata files, `latest` and scratch names: never cached, a rename over `notes` must
/// not leave a stale binding.
pub const META_TTL: Duration = Duration::ZERO;

pub const NOTES: &str = "notes";
pub const VERIFY_STATE: &str = "verify_state";
pub const MANIFEST_JSON: &str = "manifest.json";
pub const LATEST: &str = "latest";
/// On-disk suffixes of archives; the file shows under its name without it.
const ARCHIVE_SUFFIXES: [&str; 3] = [".fidx", ".didx", ".blob"];

/// The identity of one node. The same key always gets the same inode number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// A namespace folder: type folders and `ns/`. The mount root is the `--ns` one.
    Namespace(BackupNamespace),
    /// `ns/` of a namespace: its child namespaces.
    NsDir(BackupNamespace),
    TypeDir(BackupNamespace, BackupType),
    Group(BackupGroup),
    GroupNotes(BackupGroup),
    GroupOwner(BackupGroup),
    Latest(BackupGroup),
    /// A finished snapshot; the second field is its folder's inode on disk, so a snapshot
    /// forgotten and made again at the same path is a new node.
    Snapshot(BackupDir, u64),
    SnapNotes(BackupDir),
    VerifyState(BackupDir),
    ManifestJson(BackupDir),
    /// An index or blob: `file` is the on-disk name, `tag` its content identity (index or
    /// blob checksum from the manifest, else inode/mtime/size).
    Archive {
        dir: BackupDir,
        file: String,
        tag: String,
    },
    /// An in-memory scratch file (`scratch.rs`), by id.
    Scratch(u64),
}

impl Node {
    pub fn kind(&self) -> Kind {
        match self {
            Node::Namespace(_)
            | Node::NsDir(_)
            | Node::TypeDir(..)
            | Node::Group(_)
            | Node::Snapshot(..) => Kind::Dir,
            Node::Latest(_) => Kind::Symlink,
            Node::GroupNotes(_)
            | Node::GroupOwner(_)
            | Node::SnapNotes(_)
            | Node::VerifyState(_)
            | Node::ManifestJson(_)
            | Node::Archive { .. }
            | Node::Scratch(_) => Kind::File,
        }
    }

    pub fn ttl(&self) -> Duration {
        match self {
            Node::Archive { .. } => ARCHIVE_TTL,
            Node::GroupNotes(_)
            | Node::SnapNotes(_)
            | Node::VerifyState(_)
            | Node::ManifestJson(_)
            | Node::Latest(_)
            | Node::Scratch(_) => META_TTL,
            Node::Namespace(_)
            | Node::NsDir(_)
            | Node::TypeDir(..)
            | Node::Group(_)
            | Node::GroupOwner(_)
            | Node::Snapshot(..) => DIR_TTL,
        }
    }

    /// How long a name may stay bound to this node: archives are re-checked like
    /// directories, so a name reused by new content soon leads to a new inode.
    pub fn entry_ttl(&self) -> Duration {
        match self {
            Node::Archive { .. } => DIR_TTL,
            _ => self.ttl(),
        }
    }

    /// Directories in which editors may keep scratch files.
    pub fn holds_scratch(&self) -> bool {
        matches!(self, Node::Group(_) | Node::Snapshot(..))
    }
}

pub fn systime(secs: i64, nsec: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The short name of an archive file, or `None` for files that are not shown.
pub fn archive_short_name(file: &str) -> Option<&str> {
    let short = ARCHIVE_SUFFIXES.iter().find_map(|s| file.strip_suffix(s))?;
    if short.is_empty() || [NOTES, VERIFY_STATE, MANIFEST_JSON].contains(&short) {
        return None;
    }
    Some(short)
}

fn stat(path: &std::path::Path) -> Result<fs::Metadata> {
    fs::metadata(path).ctx(path.display())
}

fn exists_dir(path: &std::path::Path) -> bool {
    path.is_dir()
}

fn attr_from_md(kind: Kind, md: &fs::Metadata, perm: u16, size: u64) -> Attr {
    Attr {
        ino: 0,
        kind,
        size,
        perm,
        uid: md.uid(),
        gid: md.gid(),
        mtime: systime(md.mtime(), md.mtime_nsec()),
        nlink: if kind == Kind::Dir { 2 } else { 1 },
    }
}

impl Vfs {
    /// Names of a directory node and the nodes they lead to, scratch files excluded.
    pub(super) fn list_dir(&self, node: &Node) -> Result<Vec<(String, Node)>> {
        let ds = &self.ds;
        let mut out = Vec::new();
        match node {
            Node::Namespace(ns) => {
                let groups = ds.list_groups(ns)?;
                for ty in BackupType::ALL {
                    if groups.iter().any(|g| g.ty == ty) {
                        out.push((ty.as_str().to_string(), Node::TypeDir(ns.clone(), ty)));
                    }
                }
                if !ds.list_child_namespaces(ns)?.is_empty() {
                    out.push(("ns".to_string(), Node::NsDir(ns.clone())));
                }
            }
            Node::NsDir(ns) => {
                for child in ds.list_child_namespaces(ns)? {
                    let name = child.components().last().cloned().unwrap_or_default();
                    out.push((name, Node::Namespace(child)));
                }
            }
            Node::TypeDir(ns, ty) => {
                for g in ds.list_groups(ns)?.into_iter().filter(|g| g.ty == *ty) {
                    out.push((g.id.clone(), Node::Group(g)));
                }
            }
            Node::Group(g) => {
                out.push((NOTES.to_string(), Node::GroupNotes(g.clone())));
                if ds.group_path(g).join(GROUP_OWNER).is_file() {
                    out.push((GROUP_OWNER.to_string(), Node::GroupOwner(g.clone())));
                }
                let snaps = ds.list_snapshots(g)?;
                if snaps.iter().any(|s| s.finished) {
                    out.push((LATEST.to_string(), Node::Latest(g.clone())));
                }
                for s in snaps.into_iter().filter(|s| s.finished) {
                    if let Ok(n) = self.snapshot_node(&s.dir) {
                        out.push((s.dir.time_string(), n));
                    }
                }
            }
            Node::Snapshot(d, _) => {
                out.push((NOTES.to_string(), Node::SnapNotes(d.clone())));
                out.push((VERIFY_STATE.to_string(), Node::VerifyState(d.clone())));
                out.push((MANIFEST_JSON.to_string(), Node::ManifestJson(d.clone())));
                for file in ds.snapshot_files(d)? {
                    let Some(short) = archive_short_name(&file) else {
                        log::debug!("snapshot {d}: not showing {file}");
                        continue;
                    };
                    if out.iter().any(|(n, _)| n == short) {
                        continue;
                    }
                    match self.archive_node(d, &file) {
                        Ok(n) => out.push((short.to_string(), n)),
                        Err(e) => log::debug!("snapshot {d}: skipping {file}: {e}"),
                    }
                }
            }
            _ => {
                return Err(Error::Io {
                    context: "not a directory".into(),
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                })
            }
        }
        Ok(out)
    }

    /// The node `name` names in directory `parent` (scratch files excluded).
    pub(super) fn lookup_real(&self, parent: &Node, name: &OsStr) -> Result<Option<Node>> {
        let Some(name) = name.to_str() else {
            return Ok(None);
        };
        let ds = &self.ds;
        Ok(match parent {
            Node::Namespace(ns) => {
                if name == "ns" {
                    (!ds.list_child_namespaces(ns)?.is_empty()).then(|| Node::NsDir(ns.clone()))
                } else if let Ok(ty) = BackupType::parse(name) {
                    exists_dir(&ds.ns_path(ns).join(ty.as_str()))
                        .then(|| Node::TypeDir(ns.clone(), ty))
                } else {
                    None
                }
            }
            Node::NsDir(ns) => match ns.child(name) {
                Ok(child) if exists_dir(&ds.ns_path(&child)) => Some(Node::Namespace(child)),
                _ => None,
            },
            Node::TypeDir(ns, ty) => match BackupGroup::new(ns.clone(), *ty, name) {
                Ok(g) if exists_dir(&ds.group_path(&g)) => Some(Node::Group(g)),
                _ => None,
            },
            Node::Group(g) => match name {
                NOTES => Some(Node::GroupNotes(g.clone())),
                GROUP_OWNER => ds
                    .group_path(g)
                    .join(GROUP_OWNER)
                    .is_file()
                    .then(|| Node::GroupOwner(g.clone())),
                LATEST => ds.last_finished(g)?.map(|_| Node::Latest(g.clone())),
                _ => match crate::util::time::parse_snapshot_time(name) {
                    Some(t) => match BackupDir::new(g.clone(), t) {
                        Ok(d) => self.snapshot_node(&d).ok(),
                        Err(_) => None,
                    },
                    None => None,
                },
            },
            Node::Snapshot(d, _) => match name {
                NOTES => Some(Node::SnapNotes(d.clone())),
                VERIFY_STATE => Some(Node::VerifyState(d.clone())),
                MANIFEST_JSON => Some(Node::ManifestJson(d.clone())),
                _ if name.starts_with('.') => None,
                _ => {
                    let dir = ds.snapshot_path(d);
                    ARCHIVE_SUFFIXES
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .find(|f| archive_short_name(f) == Some(name) && dir.join(f).is_file())
                        .map(|f| self.archive_node(d, &f))
                        .transpose()?
                }
            },
            _ => {
                return Err(Error::Io {
                    context: "not a directory".into(),
                    source: io::Error::from_raw_os_error(libc::ENOTDIR),
                })
            }
        })
    }

    /// The node of a finished snapshot (keyed by its folder's inode).
    pub(super) fn snapshot_node(&self, d: &BackupDir) -> Result<Node> {
        let path = self.ds.snapshot_path(d);
        let md = stat(&path)?;
        if !md.is_dir() || !path.join(MANIFEST_BLOB_NAME).is_file() {
            return Err(Error::NotFound(format!("snapshot {d} is not finished")));
        }
        Ok(Node::Snapshot(d.clone(), md.ino()))
    }

    pub(super) fn archive_node(&self, d: &BackupDir, file: &str) -> Result<Node> {
        let listed = self
            .snap_view(d)
            .ok()
            .and_then(|v| v.manifest.as_ref().ok().and_then(|m| m.0.file(file)));
        let tag = match listed {
            Some(entry) => entry.csum.to_hex(),
            None => {
                let md = stat(&self.ds.snapshot_path(d).join(file))?;
                format!(
                    "i{}-{}.{}-{}",
                    md.ino(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.len()
                )
            }
        };
        Ok(Node::Archive {
            dir: d.clone(),
            file: file.to_string(),
            tag,
        })
    }

    /// The target of a `latest` link.
    pub(super) fn latest_target(&self, g: &BackupGroup) -> Result<String> {
        self.ds
            .last_finished(g)?
            .map(|s| s.dir.time_string())
            .ok_or_else(|| Error::NotFound(format!("group {g} has no finished snapshot")))
    }

    /// Attributes of a node (inode number filled in by the caller).
    pub(super) fn attr_of(&self, node: &Node) -> Result<Attr> {
        let ds = &self.ds;
        let editable = if self.read_only { 0o444 } else { 0o644 };
        Ok(match node {
            Node::Namespace(ns) => attr_from_md(Kind::Dir, &stat(&ds.ns_path(ns))?, 0o755, 0),
            Node::NsDir(ns) => {
                attr_from_md(Kind::Dir, &stat(&ds.ns_path(ns).join("ns"))?, 0o755, 0)
            }
            Node::TypeDir(ns, ty) => attr_from_md(
                Kind::Dir,
                &stat(&ds.ns_path(ns).join(ty.as_str()))?,
                0o755,
                0,
            ),
            Node::Group(g) => {
                let mut a = attr_from_md(Kind::Dir, &stat(&ds.group_path(g))?, 0o755, 0);
                if let Some(last) = ds.last_finished(g)? {
                    a.mtime = systime(last.dir.time, 0);
                }
                a
            }
            Node::GroupNotes(g) => {
                let p = ds.group_path(g).join(GROUP_NOTES);
                match fs::metadata(&p) {
                    Ok(md) => attr_from_md(Kind::File, &md, editable, md.len()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        attr_from_md(Kind::File, &stat(&ds.group_path(g))?, editable, 0)
                    }
                    Err(e) => return Err(Error::io(p.display(), e)),
                }
            }
            Node::GroupOwner(g) => {
                let md = stat(&ds.group_path(g).join(GROUP_OWNER))?;
                attr_from_md(Kind::File, &md, 0o444, md.len())
            }
            Node::Latest(g) => {
                let target = self.latest_target(g)?;
                let md = stat(&ds.group_path(g))?;
                let mut a = attr_from_md(Kind::Symlink, &md, 0o777, target.len() as u64);
                a.mtime = systime(ds.last_finished(g)?.map(|s| s.dir.time).unwrap_or(0), 0);
                a
            }
            Node::Snapshot(d, folder_ino) => {
                let md = stat(&ds.snapshot_path(d))?;
                if md.ino() != *folder_ino {
                    return Err(Error::NotFound(format!("snapshot {d} was replaced")));
                }
                let mut a = attr_from_md(Kind::Dir, &md, 0o755, 0);
                a.mtime = systime(d.time, 0);
                a
            }
            Node::SnapNotes(d) | Node::VerifyState(d) | Node::ManifestJson(d) => {
                let view = self.snap_view(d)?;
                let size = match node {
                    Node::SnapNotes(_) => view.notes()?.len(),
                    Node::VerifyState(_) => view.verify_state_text()?.len(),
                    _ => view.json()?.len(),
                };
                let perm = if matches!(node, Node::ManifestJson(_)) {
                    0o444
                } else {
                    editable
                };
                Attr {
                    ino: 0,
                    kind: Kind::File,
                    size: size as u64,
                    perm,
                    uid: view.uid,
                    gid: view.gid,
                    mtime: view.mtime,
                    nlink: 1,
                }
            }
            Node::Archive { dir, file, .. } => {
                let path: PathBuf = ds.snapshot_path(dir).join(file);
                let md = stat(&path)?;
                let size = self.archive_size(node, dir, file, &md)?;
                attr_from_md(Kind::File, &md, 0o444, size)
            }
            Node::Scratch(id) => self.scratch.attr(*id)?,
        })
    }
}
