//! Every write to snapshot and group metadata, each under the locks spec §5.4 and §11.7
//! prescribe: the manifest transaction (`update_manifest`, `create_manifest`), group
//! notes, the `.protected` marker, and destroying a snapshot.

use std::fs;
use std::io;

use serde_json::{Map, Value};

use crate::store::files::{self, TempFile};
use crate::store::format::manifest::{Manifest, MANIFEST_BLOB_NAME};
use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::store::format::notes::validate_notes;
use crate::store::lock::{ExclusiveSnapshotLock, ManifestLock, MANIFEST_LOCK_TIMEOUT};
use crate::store::{Datastore, DIR_MODE, FILE_MODE, GROUP_NOTES, GROUP_OWNER, PROTECTED_MARKER};
use crate::util::error::{Error, IoContext, Result};

impl Datastore {
    /// Create a namespace folder and its parents (`ns/a/ns/b`), owned like the store.
    pub fn create_namespace(&self, ns: &BackupNamespace) -> Result<()> {
        self.check_writable()?;
        files::create_dir_all_below(self.root(), &self.ns_path(ns), DIR_MODE, self.owner())
    }

    /// Create a group folder with its `owner` file (O_EXCL) when missing; an existing
    /// group must belong to `authid`. Returns whether the group was created.
    pub fn create_group(&self, g: &BackupGroup, authid: &str) -> Result<bool> {
        self.check_writable()?;
        self.create_namespace(&g.ns)?;
        let gpath = self.group_path(g);
        files::create_dir_all_below(self.root(), &gpath, DIR_MODE, self.owner())?;
        let owner_file = gpath.join(GROUP_OWNER);
        match files::create_new(&owner_file, FILE_MODE, self.owner()) {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, format!("{authid}\n").as_bytes())
                    .and_then(|_| f.sync_all())
                    .ctx(owner_file.display())?;
                Ok(true)
            }
            Err(Error::AlreadyExists { .. }) => {
                let owner = self.group_owner(g)?;
                if owner != authid {
                    return Err(Error::NotPermitted {
                        what: format!("group {g}"),
                        why: format!("it belongs to {owner}, not {authid}"),
                    });
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Create a new snapshot folder (refused if it exists) and return it locked
    /// exclusively, as a backup holds it until its manifest is written.
    pub fn create_snapshot_dir(&self, d: &BackupDir) -> Result<ExclusiveSnapshotLock> {
        self.check_writable()?;
        let path = self.snapshot_path(d);
        if !files::create_dir(&path, DIR_MODE, self.owner())? {
            return Err(Error::AlreadyExists {
                what: format!("snapshot {d}"),
            });
        }
        match self.locker().lock_snapshot_exclusive(d) {
            Ok(l) => Ok(l),
            Err(e) => {
                let _ = fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    /// The only way to change an existing manifest: take the snapshot lock shared and
    /// non-blocking, then the manifest lock(s) (5 s); load and CRC-check; let `change`
    /// edit `unprotected` (every other key kept verbatim); write `index.json.tmp_XXXXXX`,
    /// fsync, rename over `index.json.blob`; unlock; fsync the folder. If `change` fails,
    /// nothing is written.
    pub fn update_manifest<T>(
        &self,
        d: &BackupDir,
        change: impl FnOnce(&mut Map<String, Value>) -> Result<T>,
    ) -> Result<T> {
        self.check_writable()?;
        let snap_lock = self.locker().lock_snapshot_shared(d)?;
        let lock = self.locker().lock_manifest(d, MANIFEST_LOCK_TIMEOUT)?;
        let mut m = self.load_manifest(d)?;
        let out = change(m.unprotected_mut())?;
        self.store_manifest(d, &m, &lock)?;
        drop(lock);
        drop(snap_lock);
        files::fsync_dir(&self.snapshot_path(d))?;
        Ok(out)
    }

    /// Write the first manifest of a new snapshot, whose exclusive snapshot lock the
    /// caller holds. Fails if a manifest already exists.
    pub fn create_manifest(
        &self,
        d: &BackupDir,
        m: &Manifest,
        snap_lock: &ExclusiveSnapshotLock,
    ) -> Result<()> {
        self.check_writable()?;
        if snap_lock.dir() != d {
            return Err(Error::invalid(
                format!("manifest of snapshot {d}"),
                format!("the lock held is that of snapshot {}", snap_lock.dir()),
            ));
        }
        m.check_matches(d)?;
        let lock = self.locker().lock_manifest(d, MANIFEST_LOCK_TIMEOUT)?;
        let dir = self.snapshot_path(d);
        let target = dir.join(MANIFEST_BLOB_NAME);
        if target.exists() {
            return Err(Error::AlreadyExists {
                what: format!("manifest of snapshot {d}"),
            });
        }
        let mut tmp = TempFile::new(&dir, "index.json", FILE_MODE, self.owner())?;
        tmp.write_all(&m.to_blob()?)?;
        tmp.sync()?;
        tmp.persist_new(&target)?;
        drop(lock);
        files::fsync_dir(&dir)
    }

    /// Store a manifest: possible only with the `ManifestLock` of that same snapshot.
    fn store_manifest(&self, d: &BackupDir, m: &Manifest, lock: &ManifestLock) -> Result<()> {
        if lock.dir() != d {
            return Err(Error::invalid(
                format!("manifest of snapshot {d}"),
                format!("the lock held is that of snapshot {}", lock.dir()),
            ));
        }
        let dir = self.snapshot_path(d);
        let mut tmp = TempFile::new(&dir, "index.json", FILE_MODE, self.owner())?;
        tmp.write_all(&m.to_blob()?)?;
        tmp.sync()?;
        tmp.persist(&dir.join(MANIFEST_BLOB_NAME))
    }

    /// Set or clear (`""`) a snapshot's notes (stored as an empty string, as PBS does).
    pub fn set_snapshot_notes(&self, d: &BackupDir, notes: &[u8]) -> Result<()> {
        let text = validate_notes(notes, &format!("snapshot {d}"))?;
        self.update_manifest(d, |u| {
            u.insert("notes".into(), Value::String(text));
            Ok(())
        })
    }

    /// Replace a group's notes: group lock non-blocking (busy while a backup runs), then
    /// `notes.tmp_XXXXXX` + rename, 0644, the store's owner.
    pub fn set_group_notes(&self, g: &BackupGroup, notes: &[u8]) -> Result<()> {
        self.check_writable()?;
        validate_notes(notes, &format!("group {g}"))?;
        let gpath = self.group_path(g);
        if !gpath.is_dir() {
            return Err(Error::not_found(format!("group {g}")));
        }
        let _lock = self.locker().lock_group(g)?;
        files::replace_file(
            &gpath.join(GROUP_NOTES),
            notes,
            FILE_MODE,
            self.owner(),
            true,
        )
    }

    /// Create or remove `.protected` under the exclusive snapshot lock.
    pub fn set_protected(&self, d: &BackupDir, on: bool) -> Result<()> {
        self.check_writable()?;
        let info = self.snapshot_info(d)?;
        let _lock = self.locker().lock_snapshot_exclusive(d)?;
        let marker = self.snapshot_path(d).join(PROTECTED_MARKER);
        match (on, info.protected) {
            (true, false) => drop(files::create_new(&marker, FILE_MODE, self.owner())?),
            (false, true) => fs::remove_file(&marker).ctx(marker.display())?,
            _ => {}
        }
        Ok(())
    }

    /// Remove a snapshot (forget, prune): exclusive snapshot lock, plus the manifest lock
    /// when it is finished; protected snapshots are refused. An emptied group is removed
    /// too when its lock is free.
    pub fn destroy_snapshot(&self, d: &BackupDir) -> Result<()> {
        self.check_writable()?;
        let info = self.snapshot_info(d)?;
        let snap_lock = self.locker().lock_snapshot_exclusive(d)?;
        let manifest_lock = if info.finished {
            Some(self.locker().lock_manifest(d, MANIFEST_LOCK_TIMEOUT)?)
        } else {
            None
        };
        if self.snapshot_path(d).join(PROTECTED_MARKER).exists() {
            return Err(Error::NotPermitted {
                what: format!("snapshot {d}"),
                why: "it is protected: unprotect it first".into(),
            });
        }
        let path = self.snapshot_path(d);
        fs::remove_dir_all(&path).ctx(format!("remove {}", path.display()))?;
        drop(manifest_lock);
        drop(snap_lock);
        self.locker().remove_snapshot_lock_files(d);
        self.remove_group_if_empty(&d.group);
        Ok(())
    }

    /// Remove a group folder (with `owner` and `notes`) that has no snapshot left.
    fn remove_group_if_empty(&self, g: &BackupGroup) {
        let Ok(lock) = self.locker().lock_group(g) else {
            return;
        };
        self.remove_empty_group_locked(g, lock);
    }

    /// As `remove_group_if_empty`, for a caller that holds the group lock.
    pub(crate) fn remove_empty_group_locked(
        &self,
        g: &BackupGroup,
        lock: crate::store::lock::GroupLock,
    ) {
        match self.list_snapshots(g) {
            Ok(s) if s.is_empty() => {}
            _ => return,
        }
        let gpath = self.group_path(g);
        let res = fs::remove_dir_all(&gpath);
        drop(lock);
        match res {
            Ok(()) => self.locker().remove_group_lock_file(g),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("could not remove emptied group {}: {e}", gpath.display()),
        }
    }
}
