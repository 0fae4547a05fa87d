//! The datastore: its folder layout (spec §1), opening and creating one, and listing
//! namespaces, groups and snapshots. Writes live in `transaction.rs`.

pub mod access;
pub mod chunks;
pub mod files;
pub mod format;
pub mod lock;
pub mod ops;
pub mod pbs_config;
pub mod progress;
pub mod root;
mod transaction;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::util::error::{Error, IoContext, ReadOnlyWhy, Result};
use crate::util::sys;
use access::Access;
use chunks::ChunkStore;
use files::Owner;
use format::archive::ArchiveName;
use format::blob;
use format::index::Index;
use format::manifest::{Manifest, MANIFEST_BLOB_NAME};
use format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use lock::Locker;
use parking_lot::Mutex;
use pbs_config::StoreConfig;
use root::StoreRoot;
use std::time::{Duration, Instant};

/// `sha256("Proxmox Backup Catalog file v1.0")[0..8]`
pub const CATALOG_MAGIC: [u8; 8] = [145, 253, 96, 249, 196, 103, 88, 213];

const ROOT_DIR_MODE: u32 = 0o755;
pub const DIR_MODE: u32 = 0o755;
pub const FILE_MODE: u32 = 0o644;
pub const PROTECTED_MARKER: &str = ".protected";
pub const GROUP_NOTES: &str = "notes";
pub const GROUP_OWNER: &str = "owner";
/// `owner` holds one auth id: anything longer is not read.
const MAX_OWNER_FILE: u64 = 64 * 1024;
/// Group notes as PBS may have written them (pbsfs writes at most 1 MiB).
const MAX_GROUP_NOTES_FILE: u64 = 16 << 20;

/// A snapshot folder as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub dir: BackupDir,
    /// `index.json.blob` exists.
    pub finished: bool,
    /// `.protected` exists.
    pub protected: bool,
}

/// An open datastore.
#[derive(Debug)]
pub struct Datastore {
    root: PathBuf,
    /// The root opened once: every read below it follows no symlink.
    fs: StoreRoot,
    owner: Owner,
    chunks: ChunkStore,
    locker: Locker,
    pbs: Option<StoreConfig>,
    read_only_medium: bool,
    /// What the store allows, and when that was last read from `datastore.cfg` (PBS may
    /// change a maintenance mode while a mount runs: re-read at most once a second).
    access: Mutex<(Instant, Access)>,
}

/// How long a decision read from `datastore.cfg` stands.
const ACCESS_RECHECK: Duration = Duration::from_secs(1);

impl Datastore {
    /// Open an existing datastore (a real PBS one opens as-is). `pbs_store` names the
    /// PBS store explicitly; otherwise `datastore.cfg` is searched by path.
    pub fn open(root: &Path, pbs_store: Option<&str>) -> Result<Datastore> {
        let root = fs::canonicalize(root).ctx(format!("datastore {}", root.display()))?;
        let owner = Owner::of(&root)?;
        let store_fs = StoreRoot::open(&root)?;
        let chunks = ChunkStore::open(&root, owner)?;
        let pbs = pbs_config::find_store(&root, pbs_store)?;
        let locker = Locker::new(&store_fs, owner, pbs.as_ref());
        let read_only_medium = sys::statvfs(&root).ctx(root.display())?.read_only;
        let access = Access::of(pbs.as_ref(), read_only_medium);
        if let Some(r) = &access.no_reads {
            return Err(Error::Unavailable {
                what: format!("datastore {}", root.display()),
                why: r.to_string(),
            });
        }
        let chunks = match &access.no_chunks {
            Some(r) => chunks.refusing_reads(r.to_string()),
            None => chunks,
        };
        match &pbs {
            Some(cfg) => log::debug!(
                "opened datastore {}: PBS datastore '{}', PBS's lock files",
                root.display(),
                cfg.name
            ),
            None => log::debug!(
                "opened datastore {}: not in a PBS configuration",
                root.display()
            ),
        }
        Ok(Datastore {
            fs: store_fs,
            root,
            owner,
            chunks,
            locker,
            pbs,
            read_only_medium,
            access: Mutex::new((Instant::now(), access)),
        })
    }

    /// Create a datastore at `root` (missing or empty). With `full`, all 65536 chunk
    /// prefix folders are made, as PBS does; a sparse store creates them on demand.
    pub fn create(root: &Path, full: bool) -> Result<Datastore> {
        Self::create_with_progress(root, full, None)
    }

    /// `create`, reporting the chunk prefix folders made (`progress::Progress::ChunkFolders`).
    pub fn create_with_progress(
        root: &Path,
        full: bool,
        progress: Option<progress::ProgressFn>,
    ) -> Result<Datastore> {
        match fs::read_dir(root) {
            Ok(mut rd) => {
                if rd.any(|e| e.map(|e| e.file_name() != "lost+found").unwrap_or(true)) {
                    return Err(Error::NotPermitted {
                        what: root.display().to_string(),
                        why: "not empty: refusing to create a datastore there".into(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = root
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let owner = Owner::of(parent)?;
                files::create_dir(root, ROOT_DIR_MODE, owner)?;
            }
            Err(e) => return Err(Error::io(root.display(), e)),
        }
        let canon = fs::canonicalize(root).ctx(root.display())?;
        // A store configured in PBS belongs to the backup user.
        if let Some(_cfg) = pbs_config::find_store(&canon, None)? {
            pbs_config::backup_user().apply_path(&canon)?;
        }
        let owner = Owner::of(&canon)?;
        fs::set_permissions(
            &canon,
            std::os::unix::fs::PermissionsExt::from_mode(ROOT_DIR_MODE),
        )
        .ctx(canon.display())?;
        ChunkStore::create_with_progress(&canon, owner, full, progress)?;
        let lock = files::create_new(&canon.join(".lock"), FILE_MODE, owner)?;
        drop(lock);
        Datastore::open(&canon, None)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Reads of files and folders inside the store (no symlinks, regular files only).
    pub fn fs(&self) -> &StoreRoot {
        &self.fs
    }

    /// An index file of this store, its size checked before it is read.
    pub fn read_index(&self, path: &Path) -> Result<Index> {
        self.fs.read_index(path)
    }

    pub fn chunk_store(&self) -> &ChunkStore {
        &self.chunks
    }

    pub fn locker(&self) -> &Locker {
        &self.locker
    }

    /// The PBS configuration of this store, when it is a configured PBS store.
    pub fn pbs_config(&self) -> Option<&StoreConfig> {
        self.pbs.as_ref()
    }

    /// The name used in UPIDs and logs: the PBS store name, or the folder name.
    pub fn name(&self) -> String {
        match &self.pbs {
            Some(c) => c.name.clone(),
            None => self
                .root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "datastore".into()),
        }
    }

    /// What the store allows now: its maintenance mode and backend as `datastore.cfg`
    /// says (re-read at most once a second), and its medium.
    pub fn access(&self) -> Access {
        let mut g = self.access.lock();
        if let Some(cfg) = &self.pbs {
            if g.0.elapsed() >= ACCESS_RECHECK {
                match pbs_config::find_store(&self.root, Some(&cfg.name)) {
                    Ok(now) => g.1 = Access::of(now.as_ref(), self.read_only_medium),
                    Err(e) => log::warn!("re-reading the PBS configuration: {e}"),
                }
                g.0 = Instant::now();
            }
        }
        g.1.clone()
    }

    /// Refuse writes to a read-only, S3-backed or maintenance-mode store (spec §11.9).
    pub fn check_writable(&self) -> Result<()> {
        match self.access().no_writes {
            Some(r) => Err(Error::ReadOnly {
                what: format!("datastore {}", self.root.display()),
                why: ReadOnlyWhy::Store(r.to_string()),
            }),
            None => Ok(()),
        }
    }

    /// Refuse reads of a store in a maintenance mode that forbids them.
    pub fn check_readable(&self) -> Result<()> {
        match self.access().no_reads {
            Some(r) => Err(Error::Unavailable {
                what: format!("datastore {}", self.root.display()),
                why: r.to_string(),
            }),
            None => Ok(()),
        }
    }

    pub fn ns_path(&self, ns: &BackupNamespace) -> PathBuf {
        self.root.join(ns.rel_path())
    }

    pub fn group_path(&self, g: &BackupGroup) -> PathBuf {
        self.root.join(g.rel_path())
    }

    pub fn snapshot_path(&self, d: &BackupDir) -> PathBuf {
        self.root.join(d.rel_path())
    }

    /// Direct child namespaces of `ns`.
    pub fn list_child_namespaces(&self, ns: &BackupNamespace) -> Result<Vec<BackupNamespace>> {
        let mut out = Vec::new();
        for name in self.list_names(&self.ns_path(ns).join("ns"), true)? {
            if let Ok(child) = ns.child(&name) {
                if self.fs.is_dir(&self.ns_path(&child)) {
                    out.push(child);
                }
            } else {
                log::debug!("skipping namespace folder {name:?} in {ns}: not a valid name");
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every namespace, the root first, then level by level (breadth first).
    pub fn list_all_namespaces(&self) -> Result<Vec<BackupNamespace>> {
        self.list_namespaces_below(&BackupNamespace::root(), None)
    }

    /// `parent` and the namespaces below it, at most `max_depth` levels down, level by
    /// level. Depth is bounded by the names themselves (at most 7 levels), so this ends.
    pub fn list_namespaces_below(
        &self,
        parent: &BackupNamespace,
        max_depth: Option<usize>,
    ) -> Result<Vec<BackupNamespace>> {
        let mut out = vec![parent.clone()];
        let mut i = 0;
        while i < out.len() {
            if max_depth.is_none_or(|m| out[i].depth() - parent.depth() < m) {
                let children = self.list_child_namespaces(&out[i])?;
                out.extend(children);
            }
            i += 1;
        }
        Ok(out)
    }

    /// Groups of one namespace, sorted by type then id.
    pub fn list_groups(&self, ns: &BackupNamespace) -> Result<Vec<BackupGroup>> {
        if !ns.is_root() && !self.fs.is_dir(&self.ns_path(ns)) {
            return Err(Error::not_found(format!("namespace '{ns}'")));
        }
        let mut out = Vec::new();
        for ty in BackupType::ALL {
            let dir = self.ns_path(ns).join(ty.as_str());
            for id in self.list_names(&dir, true)? {
                match BackupGroup::new(ns.clone(), ty, &id) {
                    Ok(g) => out.push(g),
                    Err(_) => log::debug!("skipping group folder {ty}/{id:?}: not a valid id"),
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Snapshot folders of a group, oldest first; unfinished ones included.
    pub fn list_snapshots(&self, g: &BackupGroup) -> Result<Vec<SnapshotInfo>> {
        let gpath = self.group_path(g);
        if !self.fs.is_dir(&gpath) {
            return Err(Error::not_found(format!("group {g}")));
        }
        let mut out = Vec::new();
        for name in self.list_names(&gpath, true)? {
            let Some(time) = crate::util::time::parse_snapshot_time(&name) else {
                continue;
            };
            let dir = BackupDir::new(g.clone(), time)?;
            out.push(self.info_of(dir));
        }
        out.sort_by_key(|s| s.dir.time);
        Ok(out)
    }

    /// The newest finished snapshot of a group.
    pub fn last_finished(&self, g: &BackupGroup) -> Result<Option<SnapshotInfo>> {
        Ok(self
            .list_snapshots(g)?
            .into_iter()
            .rev()
            .find(|s| s.finished))
    }

    pub fn snapshot_info(&self, d: &BackupDir) -> Result<SnapshotInfo> {
        if !self.fs.is_dir(&self.snapshot_path(d)) {
            return Err(Error::not_found(format!("snapshot {d}")));
        }
        Ok(self.info_of(d.clone()))
    }

    fn info_of(&self, dir: BackupDir) -> SnapshotInfo {
        let path = self.snapshot_path(&dir);
        SnapshotInfo {
            finished: self.fs.is_file(&path.join(MANIFEST_BLOB_NAME)),
            protected: self.fs.metadata(&path.join(PROTECTED_MARKER)).is_ok(),
            dir,
        }
    }

    /// Read a snapshot's manifest (CRC checked, parsed, matching its folder). For readers:
    /// the result can never be stored; writes go through `update_manifest`.
    pub fn load_manifest(&self, d: &BackupDir) -> Result<Manifest> {
        self.load_manifest_json(d).map(|(m, _)| m)
    }

    /// The manifest and its JSON text as stored (the blob decoded once).
    pub fn load_manifest_json(&self, d: &BackupDir) -> Result<(Manifest, Vec<u8>)> {
        let path = self.snapshot_path(d).join(MANIFEST_BLOB_NAME);
        let raw = match self.fs.read(&path, blob::MAX_BLOB_FILE) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), Error::NotFound { .. }) => {
                return Err(if self.fs.is_dir(&self.snapshot_path(d)) {
                    Error::NotFinished {
                        snapshot: d.to_string(),
                    }
                } else {
                    Error::not_found(format!("snapshot {d}"))
                })
            }
            Err(e) => return Err(e.context(format!("snapshot {d}"))),
        };
        let json =
            blob::decode(&raw).map_err(|e| e.context(format!("snapshot {d}: manifest blob")))?;
        let m = Manifest::from_json(&json).map_err(|e| e.context(format!("snapshot {d}")))?;
        m.check_matches(d)
            .map_err(|e| e.context(format!("snapshot {d}")))?;
        Ok((m, json))
    }

    /// Archive files present in a snapshot folder (index and blob files, the manifest
    /// excluded), sorted by name.
    pub fn snapshot_files(&self, d: &BackupDir) -> Result<Vec<ArchiveName>> {
        let mut v: Vec<ArchiveName> = self
            .list_names(&self.snapshot_path(d), false)?
            .iter()
            .filter_map(|n| ArchiveName::parse(n).ok())
            .collect();
        v.sort_by(|a, b| a.file().cmp(b.file()));
        Ok(v)
    }

    /// The `owner` file as stored.
    pub fn group_owner_bytes(&self, g: &BackupGroup) -> Result<Vec<u8>> {
        self.fs
            .read(&self.group_path(g).join(GROUP_OWNER), MAX_OWNER_FILE)
    }

    /// The group's owner (first line of `owner`, end trimmed).
    pub fn group_owner(&self, g: &BackupGroup) -> Result<String> {
        let s = String::from_utf8_lossy(&self.group_owner_bytes(g)?).into_owned();
        Ok(s.lines().next().unwrap_or("").trim_end().to_string())
    }

    /// The group's notes, byte-exact (empty when there are none): the one reader of
    /// group notes, for the CLI and the mount.
    pub fn group_notes(&self, g: &BackupGroup) -> Result<Vec<u8>> {
        match self
            .fs
            .read(&self.group_path(g).join(GROUP_NOTES), MAX_GROUP_NOTES_FILE)
        {
            Ok(b) => Ok(b),
            Err(e) if matches!(e.kind(), Error::NotFound { .. }) => {
                if self.fs.is_dir(&self.group_path(g)) {
                    Ok(Vec::new())
                } else {
                    Err(Error::not_found(format!("group {g}")))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Names of the folders (`dirs`) or regular files in `dir` (missing: none), hidden
    /// ones skipped; symlinks are neither, so they are never listed.
    fn list_names(&self, dir: &Path, dirs: bool) -> Result<Vec<String>> {
        let Some(listing) = self.fs.read_dir(dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, kind) in listing.typed()? {
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let want = if dirs {
                crate::util::sys::EntryType::Dir
            } else {
                crate::util::sys::EntryType::File
            };
            if kind == want {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}
