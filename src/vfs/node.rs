//! The mount's view of the datastore (ARCHITECTURE §2): the node keys, how long the
//! kernel may cache each kind, and the three questions every node answers (what a
//! directory lists, what a name in it leads to, its attributes), each sent to the file
//! of its node kind: `tree.rs` (folders, `latest`, `owner`), `meta.rs` (`notes`,
//! `verify_state`, `manifest.json`), `archive.rs` (archives), `scratch.rs`. Everything is
//! checked against the disk on demand (what is unchanged comes from `groups.rs`'s group
//! listings and `meta.rs`'s manifest summaries), so a snapshot made or forgotten
//! meanwhile shows on the next listing.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::format::archive::ArchiveName;
use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::util::error::{Error, Result};

use super::{Attr, Kind, Vfs};

/// Entry and attribute TTL of directories and read-only made-up files: short, so the view
/// follows the datastore.
const DIR_TTL: Duration = Duration::from_secs(1);
/// Archive content never changes for a given key (the key holds its checksum).
const ARCHIVE_TTL: Duration = Duration::from_secs(3600);
/// Metadata files: cached up to 1 s (ARCHITECTURE §2, relaxed by issue 11). Every
/// commit through the mount, and so every rename over one, invalidates the kernel's
/// entry and attributes at once (`Vfs::after_commit`); changes made elsewhere show
/// within the TTL. (`latest` is keyed by its target and cached like a folder.)
const META_TTL: Duration = Duration::from_secs(1);
/// Scratch names: never cached, a rename of one over `notes` must not leave a stale
/// binding.
const SCRATCH_TTL: Duration = Duration::ZERO;

pub const NOTES: &str = "notes";
pub const VERIFY_STATE: &str = "verify_state";
pub const MANIFEST_JSON: &str = "manifest.json";
pub const LATEST: &str = "latest";

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
    /// `latest`, keyed by the snapshot it points to: a new newest snapshot is a new
    /// inode, so the kernel may cache each link's target (FUSE_CACHE_SYMLINKS).
    Latest(BackupGroup, i64),
    /// A finished snapshot; the second field is its folder's inode on disk, so a snapshot
    /// forgotten and made again at the same path is a new node.
    Snapshot(BackupDir, u64),
    SnapNotes(BackupDir),
    VerifyState(BackupDir),
    ManifestJson(BackupDir),
    /// An index or blob: `file` its on-disk name, `tag` its content identity (index or
    /// blob checksum from the manifest, else inode/mtime/size).
    Archive {
        dir: BackupDir,
        file: ArchiveName,
        tag: String,
    },
    /// A pxar archive shown as a folder (`root.pxar/`): its root entry.
    PxarRoot(PxarRef),
    /// An entry inside a pxar archive, keyed by the stream offset of its FILENAME (a
    /// hardlink: of its target's), so inode numbers derive from archive offsets. The kind
    /// is part of the key (an offset's kind never changes in an archive of one tag).
    PxarEntry {
        archive: PxarRef,
        offset: u64,
        kind: Kind,
        /// Where its metadata ends in the stream (with `offset`, what decoding it again
        /// needs).
        end: u64,
    },
    /// An in-memory scratch file (`scratch.rs`), by id.
    Scratch(u64),
}

/// A pxar archive of a snapshot: its (metadata) index file and content identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PxarRef {
    pub dir: BackupDir,
    pub file: ArchiveName,
    /// The index checksum from the manifest: new content is a new archive.
    pub tag: String,
}

impl Node {
    pub fn kind(&self) -> Kind {
        match self {
            Node::Namespace(_)
            | Node::NsDir(_)
            | Node::TypeDir(..)
            | Node::Group(_)
            | Node::Snapshot(..)
            | Node::PxarRoot(_) => Kind::Dir,
            Node::PxarEntry { kind, .. } => *kind,
            Node::Latest(..) => Kind::Symlink,
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
            Node::Archive { .. } | Node::PxarRoot(_) | Node::PxarEntry { .. } => ARCHIVE_TTL,
            Node::GroupNotes(_)
            | Node::SnapNotes(_)
            | Node::VerifyState(_)
            | Node::ManifestJson(_) => META_TTL,
            Node::Scratch(_) => SCRATCH_TTL,
            Node::Namespace(_)
            | Node::NsDir(_)
            | Node::TypeDir(..)
            | Node::Group(_)
            | Node::GroupOwner(_)
            | Node::Latest(..)
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

    /// How errors name this node.
    pub fn describe(&self) -> String {
        match self {
            Node::Namespace(ns) | Node::NsDir(ns) => format!("namespace '{ns}'"),
            Node::TypeDir(ns, ty) => format!("namespace '{ns}' type {ty}"),
            Node::Group(g) => format!("group {g}"),
            Node::GroupNotes(g) => format!("notes of group {g}"),
            Node::GroupOwner(g) => format!("owner of group {g}"),
            Node::Latest(g, _) => format!("{g}/{LATEST}"),
            Node::Snapshot(d, _) => format!("snapshot {d}"),
            Node::SnapNotes(d) => format!("notes of snapshot {d}"),
            Node::VerifyState(d) => format!("verify_state of snapshot {d}"),
            Node::ManifestJson(d) => format!("{d}/{MANIFEST_JSON}"),
            Node::Archive { dir, file, .. } => format!("{dir}/{file}"),
            Node::PxarRoot(a) => format!("{}/{}", a.dir, a.file),
            Node::PxarEntry {
                archive, offset, ..
            } => {
                format!("{}/{} entry at offset {offset}", archive.dir, archive.file)
            }
            Node::Scratch(id) => format!("scratch file {id}"),
        }
    }
}

pub fn systime(secs: i64, nsec: i64) -> SystemTime {
    let nsec = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nsec
    } else {
        // Before 1970: `secs` is the floor, the nanoseconds count forward from it.
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nsec
    }
}

pub fn attr_from_md(kind: Kind, md: &fs::Metadata, perm: u16, size: u64) -> Attr {
    Attr {
        ino: 0,
        kind,
        size,
        perm,
        uid: md.uid(),
        gid: md.gid(),
        mtime: systime(md.mtime(), md.mtime_nsec()),
        nlink: if kind == Kind::Dir { 2 } else { 1 },
        rdev: 0,
    }
}

impl Vfs {
    /// Names of a directory node and the nodes they lead to, scratch files excluded.
    pub(super) fn list_dir(&self, node: &Node) -> Result<Vec<(OsString, Node)>> {
        let names = |v: Vec<(String, Node)>| v.into_iter().map(|(n, x)| (n.into(), x)).collect();
        match node {
            Node::Namespace(ns) => self.list_namespace(ns).map(names),
            Node::NsDir(ns) => self.list_child_namespaces(ns).map(names),
            Node::TypeDir(ns, ty) => self.list_type(ns, *ty).map(names),
            Node::Group(g) => self.list_group(g).map(names),
            Node::Snapshot(d, _) => self.list_snapshot(d).map(names),
            Node::PxarRoot(a) => self.pxar_list(a, None),
            Node::PxarEntry {
                archive,
                offset,
                end,
                ..
            } => self.pxar_list(archive, Some((*offset, *end))),
            Node::GroupNotes(_)
            | Node::GroupOwner(_)
            | Node::Latest(..)
            | Node::SnapNotes(_)
            | Node::VerifyState(_)
            | Node::ManifestJson(_)
            | Node::Archive { .. }
            | Node::Scratch(_) => Err(Error::NotADirectory {
                what: node.describe(),
            }),
        }
    }

    /// The node `name` names in directory `parent` (scratch files excluded).
    pub(super) fn lookup_real(&self, parent: &Node, name: &OsStr) -> Result<Option<Node>> {
        // Names inside pxar archives are any bytes; the rest of the view is UTF-8.
        match parent {
            Node::PxarRoot(a) => return self.pxar_lookup(a, None, name.as_bytes()),
            Node::PxarEntry {
                archive,
                offset,
                end,
                ..
            } => return self.pxar_lookup(archive, Some((*offset, *end)), name.as_bytes()),
            _ => {}
        }
        let Some(name) = name.to_str() else {
            return Ok(None);
        };
        match parent {
            Node::Namespace(ns) => self.lookup_in_namespace(ns, name),
            Node::NsDir(ns) => self.lookup_child_namespace(ns, name),
            Node::TypeDir(ns, ty) => self.lookup_group(ns, *ty, name),
            Node::Group(g) => self.lookup_in_group(g, name),
            Node::Snapshot(d, _) => self.lookup_in_snapshot(d, name),
            Node::GroupNotes(_)
            | Node::GroupOwner(_)
            | Node::Latest(..)
            | Node::SnapNotes(_)
            | Node::VerifyState(_)
            | Node::ManifestJson(_)
            | Node::Archive { .. }
            | Node::PxarRoot(_)
            | Node::PxarEntry { .. }
            | Node::Scratch(_) => Err(Error::NotADirectory {
                what: parent.describe(),
            }),
        }
    }

    /// Attributes of a node (inode number filled in by the caller).
    pub(super) fn attr_of(&self, node: &Node) -> Result<Attr> {
        match node {
            Node::Namespace(_)
            | Node::NsDir(_)
            | Node::TypeDir(..)
            | Node::Group(_)
            | Node::Snapshot(..)
            | Node::GroupOwner(_)
            | Node::Latest(..) => self.tree_attr(node),
            Node::GroupNotes(_)
            | Node::SnapNotes(_)
            | Node::VerifyState(_)
            | Node::ManifestJson(_) => self.meta_attr(node),
            Node::Archive { dir, file, .. } => self.archive_attr(node, dir, file),
            Node::PxarRoot(a) => self.pxar_attr(a, None),
            Node::PxarEntry {
                archive,
                offset,
                end,
                ..
            } => self.pxar_attr(archive, Some((*offset, *end))),
            Node::Scratch(id) => self.scratch.attr(*id),
        }
    }
}
