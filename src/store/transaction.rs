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
use crate::store::pbs_config;
use crate::store::{Datastore, DIR_MODE, FILE_MODE, GROUP_NOTES, GROUP_OWNER, PROTECTED_MARKER};
use crate::util::error::{Error, IoContext, Result};

impl Datastore {
    /// Create a namespace folder and its parents (`ns/a/ns/b`), owned like the store.
    pub fn create_namespace(&self, ns: &BackupNamespace) -> Result<()> {
        self.check_writable()?;
        self.fs()
            .ensure_dir(&self.ns_path(ns), DIR_MODE, self.owner())
            .map(drop)
    }

    /// Create a group folder with its `owner` file when missing; an existing group must
    /// belong to `authid`. Returns whether the group was created. The owner file is
    /// written whole and then linked into place (never replacing one): a process killed
    /// in between leaves a temp file, not an empty `owner` that would make every later
    /// backup of the group fail ("it belongs to , not ...").
    pub fn create_group(&self, g: &BackupGroup, authid: &str) -> Result<bool> {
        self.check_writable()?;
        self.create_namespace(&g.ns)?;
        let gpath = self.group_path(g);
        let gdir = self.fs().ensure_dir(&gpath, DIR_MODE, self.owner())?;
        let target = gdir.join(GROUP_OWNER);
        let linked = if self.fs().metadata(&target).is_ok() {
            Err(Error::AlreadyExists {
                what: target.display().to_string(),
            })
        } else {
            let mut tmp = files::TempFile::new(gdir.shown(), GROUP_OWNER, FILE_MODE, self.owner())?;
            tmp.write_all(format!("{authid}\n").as_bytes())?;
            tmp.sync()?;
            tmp.persist_new(&target)
        };
        match linked {
            Ok(()) => Ok(true),
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
        let gdir = self.fs().dir(&self.group_path(&d.group))?;
        let name = d.time_string();
        if !files::create_dir(&gdir.join(&name), DIR_MODE, self.owner())? {
            return Err(Error::AlreadyExists {
                what: format!("snapshot {d}"),
            });
        }
        match self.locker().lock_snapshot_exclusive(d) {
            Ok(l) => Ok(l),
            Err(e) => {
                let _ = fs::remove_dir(gdir.join(&name));
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
        self.remove_stale_manifest_temps(d);
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
        let dir = self.fs().dir(&self.snapshot_path(d))?;
        let target = dir.join(MANIFEST_BLOB_NAME);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(Error::AlreadyExists {
                what: format!("manifest of snapshot {d}"),
            });
        }
        let mut tmp = TempFile::new(&dir.path(), "index.json", FILE_MODE, self.owner())?;
        tmp.write_all(&m.to_blob()?)?;
        tmp.sync()?;
        tmp.persist_new(&target)
            .map_err(|e| e.context(format!("snapshot {d}")))?;
        drop(lock);
        dir.file().sync_all().ctx(dir.shown().display())
    }

    /// Remove the `index.json.tmp_XXXXXX` files of writers killed mid-transaction, which
    /// nothing else would ever remove. Only under the shared snapshot lock and the
    /// manifest lock, as `update_manifest` holds them: every writer of such a file holds
    /// one that excludes these (a transaction, here or in PBS, the manifest lock; a
    /// backup writing its first manifest, the exclusive snapshot lock), so none found
    /// now is being written. A failure only leaves the file: it is logged.
    fn remove_stale_manifest_temps(&self, d: &BackupDir) {
        let removed = self.fs().dir(&self.snapshot_path(d)).and_then(|dir| {
            let names = crate::util::sys::read_dir_fd(dir.file()).ctx(dir.shown().display())?;
            let mut n = 0;
            for (name, _) in names {
                if files::is_temp_name(&name, "index.json") {
                    fs::remove_file(dir.join(&name))
                        .ctx(format!("remove {}", dir.shown().join(&name).display()))?;
                    n += 1;
                }
            }
            Ok(n)
        });
        match removed {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} stale manifest temp file(s) of snapshot {d}"),
            Err(e) => log::warn!("stale manifest temp files of snapshot {d} stay: {e}"),
        }
    }

    /// Store a manifest: possible only with the `ManifestLock` of that same snapshot.
    fn store_manifest(&self, d: &BackupDir, m: &Manifest, lock: &ManifestLock) -> Result<()> {
        if lock.dir() != d {
            return Err(Error::invalid(
                format!("manifest of snapshot {d}"),
                format!("the lock held is that of snapshot {}", lock.dir()),
            ));
        }
        let dir = self.fs().dir(&self.snapshot_path(d))?;
        let mut tmp = TempFile::new(&dir.path(), "index.json", FILE_MODE, self.owner())?;
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
        let gdir = match self.fs().dir(&self.group_path(g)) {
            Ok(d) => d,
            Err(e) if matches!(e.kind(), Error::NotFound { .. }) => {
                return Err(Error::not_found(format!("group {g}")))
            }
            Err(e) => return Err(e),
        };
        let _lock = self.locker().lock_group(g)?;
        files::replace_file(
            &gdir.join(GROUP_NOTES),
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
        let dir = self.fs().dir(&self.snapshot_path(d))?;
        let marker = dir.join(PROTECTED_MARKER);
        let shown = dir.shown().join(PROTECTED_MARKER);
        match (on, info.protected) {
            (true, false) => drop(
                files::create_new(&marker, FILE_MODE, self.owner())
                    .map_err(|e| e.context(shown.display()))?,
            ),
            (false, true) => fs::remove_file(&marker).ctx(shown.display())?,
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
        if self.info_of(d.clone()).protected {
            return Err(Error::NotPermitted {
                what: format!("snapshot {d}"),
                why: "it is protected: unprotect it first".into(),
            });
        }
        // Through the opened group folder: a symlink planted on the way is never followed
        // (remove_dir_all itself does not follow symlinks inside the snapshot).
        let gdir = self.fs().dir(&self.group_path(&d.group))?;
        fs::remove_dir_all(gdir.join(d.time_string()))
            .ctx(format!("remove {}", self.snapshot_path(d).display()))?;
        drop(manifest_lock);
        drop(snap_lock);
        self.locker().remove_snapshot_lock_files(d);
        self.remove_group_if_empty(&d.group);
        Ok(())
    }

    /// Remove a group folder that has no snapshot left, as PBS does (spec §11.9): only
    /// when its lock is free, and on a PBS-managed store only when PBS certainly runs
    /// its new locking scheme.
    fn remove_group_if_empty(&self, g: &BackupGroup) {
        if let Some(why) = pbs_config::why_keep_emptied_groups(self.pbs_config()) {
            log::debug!("keeping the folder of emptied group {g}: {why}");
            return;
        }
        let Ok(lock) = self.locker().lock_group(g) else {
            return;
        };
        self.remove_empty_group_locked(g, lock);
    }

    /// As `remove_group_if_empty`, for a caller that holds the group lock. Never
    /// recursive, as PBS's `remove_group_dir`: `notes` and `owner` go, then `rmdir`, which
    /// fails harmlessly when anything else is inside (nothing foreign is ever deleted).
    pub(crate) fn remove_empty_group_locked(
        &self,
        g: &BackupGroup,
        lock: crate::store::lock::GroupLock,
    ) {
        match self.list_snapshots(g) {
            Ok(s) if s.is_empty() => {}
            _ => return,
        }
        if let Some(why) = pbs_config::why_keep_emptied_groups(self.pbs_config()) {
            log::debug!("keeping the folder of emptied group {g}: {why}");
            return;
        }
        // Through the opened group and type folders: a symlink planted on the way is
        // never followed (unlink and rmdir do not follow one as the last component).
        let gpath = self.group_path(g);
        let dirs = self.fs().dir(&gpath).and_then(|gdir| {
            let parent = gpath.parent().expect("a group folder has a parent");
            Ok((gdir, self.fs().dir(parent)?))
        });
        let (gdir, parent) = match dirs {
            Ok(d) => d,
            Err(e) => {
                log::debug!("emptied group folder {} stays: {e}", gpath.display());
                return;
            }
        };
        for name in [GROUP_NOTES, GROUP_OWNER] {
            match fs::remove_file(gdir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!("could not remove {name} of emptied group {g}: {e}");
                    return;
                }
            }
        }
        match fs::remove_dir(parent.join(&g.id)) {
            // The lock file goes while the lock is held: a waiter that then gets the old
            // file sees it replaced (double stat) and retries on a fresh one.
            Ok(()) => self.locker().remove_group_lock_file(g),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::debug!("emptied group folder {} stays: {e}", gpath.display()),
        }
        drop(lock);
    }
}
