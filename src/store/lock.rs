//! Lock placement (spec §5, §11.7) and the guards that hold them: `GroupLock`,
//! `SharedSnapshotLock` and `ExclusiveSnapshotLock` (two types, so neither passes for
//! the other), `ManifestLock` (no public constructor: the only way to store a manifest)
//! and `ProcessLock` (the datastore `.lock`, OFD `fcntl`). A lock is released when its
//! guard drops; timeouts poll the non-blocking call, so no thread can take a lock late
//! and leak it. Over 500 lines with its tests (the code is ~450): the races they pin
//! down belong next to the code they guard.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::store::files::{self, Owner};
use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::store::pbs_config::{self, StoreConfig};
use crate::store::root::StoreRoot;
use crate::util::error::{Error, IoContext, LockWhy, Result};
use crate::util::sys;
use crate::util::upid::systemd_escape_path;

/// PBS's manifest lock wait, everywhere (spec §5.3, pitfall 8).
pub const MANIFEST_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const LOCK_FILE_MODE: u32 = 0o660;
const LOCK_DIR_MODE: u32 = 0o755;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Shared,
    Exclusive,
}

/// Where a datastore's locks live and who owns the lock files.
#[derive(Debug, Clone)]
pub struct Locker {
    store_root: PathBuf,
    /// New-scheme root: `<run>/locks/<store>` on a PBS store, else `<store>/.locks`.
    lock_root: PathBuf,
    /// On a configured PBS store, take the old scheme's locks too (spec §11.7).
    pbs: bool,
    /// The store root, beneath which in-store lock files and folders are opened.
    fs: StoreRoot,
    owner: Owner,
}

impl Locker {
    pub fn new(fs: &StoreRoot, store_owner: Owner, pbs: Option<&StoreConfig>) -> Locker {
        let store_root = fs.path().to_path_buf();
        match pbs {
            Some(cfg) => Locker {
                lock_root: pbs_config::run_dir().join("locks").join(&cfg.name),
                store_root,
                fs: fs.clone(),
                pbs: true,
                owner: pbs_config::backup_user(),
            },
            None => Locker {
                lock_root: store_root.join(".locks"),
                store_root,
                fs: fs.clone(),
                pbs: false,
                owner: store_owner,
            },
        }
    }

    /// Lock files inside the store (`.locks`) are reached without following symlinks;
    /// PBS's run dir is outside the store and trusted like the configuration.
    fn in_store(&self, path: &Path) -> bool {
        path.starts_with(&self.store_root)
    }

    /// (dev, ino) of the file now at `path`, for the double stat.
    fn identity(&self, path: &Path) -> Option<(u64, u64)> {
        let md = if self.in_store(path) {
            self.fs.metadata(path).ok()?
        } else {
            fs::metadata(path).ok()?
        };
        Some((md.dev(), md.ino()))
    }

    /// New-scheme lock file of `rel` (`<type>/<id>[/<time>[/.index.json.lck]]`) in `ns`.
    fn new_scheme_path(&self, ns: &BackupNamespace, rel: &str) -> PathBuf {
        let mut dir = self.lock_root.clone();
        if !ns.is_root() {
            dir.push(ns.components().join(":"));
        }
        let escaped = systemd_escape_path(rel);
        if escaped.len() >= 255 {
            let hash = crate::util::digest::hex(&Sha256::digest(rel.as_bytes()));
            let head: String = escaped.chars().take(80).collect();
            let tail: String = {
                let c: Vec<char> = escaped.chars().collect();
                c[c.len().saturating_sub(80)..].iter().collect()
            };
            dir.join("hashed").join(format!("{head}...{tail}-{hash}"))
        } else {
            dir.join(escaped)
        }
    }

    fn group_rel(g: &BackupGroup) -> String {
        format!("{}/{}", g.ty, g.id)
    }

    fn snapshot_rel(d: &BackupDir) -> String {
        format!("{}/{}", Self::group_rel(&d.group), d.time_string())
    }

    /// Every lock file a manifest lock takes: the new-scheme file, and on a PBS store the
    /// 2.2+ old-scheme `<ns-path>/<type>/<id>/<time>/<time>.index.json.lck`.
    fn manifest_lock_paths(&self, d: &BackupDir) -> Vec<PathBuf> {
        let mut v = vec![self.new_scheme_path(
            &d.group.ns,
            &format!("{}/.index.json.lck", Self::snapshot_rel(d)),
        )];
        if self.pbs {
            let t = d.time_string();
            v.push(
                self.lock_root
                    .join(d.group.rel_path())
                    .join(&t)
                    .join(format!("{t}.index.json.lck")),
            );
        }
        v
    }

    /// The group lock: exclusive, non-blocking.
    pub fn lock_group(&self, g: &BackupGroup) -> Result<GroupLock> {
        let what = format!("group {g}");
        let mut held = vec![self.lock_file(
            &self.new_scheme_path(&g.ns, &Self::group_rel(g)),
            Mode::Exclusive,
            None,
            &what,
        )?];
        if self.pbs {
            held.push(lock_dir(
                &self.fs,
                &self.store_root.join(g.rel_path()),
                Mode::Exclusive,
                &what,
            )?);
        }
        Ok(GroupLock { _held: held })
    }

    /// The snapshot lock shared, non-blocking: readers, verify, a backup's base, the
    /// manifest transaction.
    pub fn lock_snapshot_shared(&self, d: &BackupDir) -> Result<SharedSnapshotLock> {
        Ok(SharedSnapshotLock {
            dir: d.clone(),
            _held: self.lock_snapshot(d, Mode::Shared)?,
        })
    }

    /// The snapshot lock exclusive, non-blocking: a backup of this snapshot, forget,
    /// prune, protect.
    pub fn lock_snapshot_exclusive(&self, d: &BackupDir) -> Result<ExclusiveSnapshotLock> {
        Ok(ExclusiveSnapshotLock {
            dir: d.clone(),
            _held: self.lock_snapshot(d, Mode::Exclusive)?,
        })
    }

    fn lock_snapshot(&self, d: &BackupDir, mode: Mode) -> Result<Vec<File>> {
        let what = format!("snapshot {d}");
        let path = self.new_scheme_path(&d.group.ns, &Self::snapshot_rel(d));
        let first = match self.lock_file(&path, mode, None, &what) {
            Ok(f) => f,
            // A reader of a store it cannot write (read-only medium, no permission):
            // the lock file cannot be made, so take what can be taken without writing,
            // a flock on the snapshot folder, which excludes PBS's old scheme and other
            // readers' exclusive takers of the same kind.
            Err(e)
                if mode == Mode::Shared
                    && matches!(e.errno(), libc::EROFS | libc::EACCES | libc::EPERM) =>
            {
                log::debug!("{what}: no lock file ({e}); locking the snapshot folder instead");
                return Ok(vec![lock_dir(
                    &self.fs,
                    &self.store_root.join(d.rel_path()),
                    mode,
                    &what,
                )?]);
            }
            Err(e) => return Err(e),
        };
        let mut held = vec![first];
        if self.pbs {
            held.push(lock_dir(
                &self.fs,
                &self.store_root.join(d.rel_path()),
                mode,
                &what,
            )?);
        }
        Ok(held)
    }

    /// The manifest lock(s), exclusive, all under one deadline. Crate-private: only the
    /// manifest transaction functions may take it.
    pub(crate) fn lock_manifest(&self, d: &BackupDir, timeout: Duration) -> Result<ManifestLock> {
        let deadline = Instant::now() + timeout;
        let what = format!("manifest of snapshot {d}");
        let mut held = Vec::new();
        for p in self.manifest_lock_paths(d) {
            held.push(self.lock_file(&p, Mode::Exclusive, Some(deadline), &what)?);
        }
        Ok(ManifestLock {
            dir: d.clone(),
            _held: held,
            since: Instant::now(),
        })
    }

    /// The datastore `.lock` (shared: backup; exclusive: gc), non-blocking.
    pub fn lock_process(&self, exclusive: bool) -> Result<ProcessLock> {
        let path = self.store_root.join(".lock");
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // As PBS does for a store without one: 0644, the store's owner.
                let owner = files::Owner::of(&self.store_root)?;
                match files::create_new(&path, 0o644, owner) {
                    Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                open()
            }
            other => other,
        }
        .ctx(format!("datastore lock {}", path.display()))?;
        if sys::ofd_try_lock(&file, exclusive).ctx(path.display())? {
            Ok(ProcessLock { _file: file })
        } else {
            Err(Error::StoreBusy {
                lock: path,
                exclusive,
            })
        }
    }

    /// Delete a destroyed snapshot's lock files (PBS does the same; waiters notice by
    /// the double-stat check).
    pub fn remove_snapshot_lock_files(&self, d: &BackupDir) {
        let _ = fs::remove_file(self.new_scheme_path(&d.group.ns, &Self::snapshot_rel(d)));
        for p in self.manifest_lock_paths(d) {
            let _ = fs::remove_file(&p);
        }
        if self.pbs {
            let _ = fs::remove_dir(self.lock_root.join(d.rel_path()));
        }
    }

    pub fn remove_group_lock_file(&self, g: &BackupGroup) {
        let _ = fs::remove_file(self.new_scheme_path(&g.ns, &Self::group_rel(g)));
    }

    /// Open (creating it as PBS does when missing) and lock one lock file. With no
    /// deadline one attempt is made; otherwise attempts are polled until the deadline.
    fn lock_file(
        &self,
        path: &Path,
        mode: Mode,
        deadline: Option<Instant>,
        what: &str,
    ) -> Result<File> {
        let mut sleep = Duration::from_millis(1);
        loop {
            let file = self.open_lock_file(path)?;
            match lock_opened(file, path, mode, |p| self.identity(p))? {
                Attempt::Locked(file) => return Ok(file),
                Attempt::Replaced => continue,
                Attempt::Busy => {}
            }
            let now = Instant::now();
            match deadline {
                Some(d) if now < d => {
                    std::thread::sleep(sleep.min(d - now));
                    sleep = (sleep * 2).min(Duration::from_millis(20));
                }
                Some(_) => {
                    return Err(Error::LockBusy {
                        what: what.to_string(),
                        lock: path.to_path_buf(),
                        why: LockWhy::TimedOut,
                    })
                }
                None => {
                    return Err(Error::LockBusy {
                        what: what.to_string(),
                        lock: path.to_path_buf(),
                        why: LockWhy::Held,
                    })
                }
            }
        }
    }

    fn open_lock_file(&self, path: &Path) -> Result<File> {
        let parent = path.parent().expect("lock files live in a folder");
        let name = path.file_name().expect("lock files have a name");
        for _ in 0..10 {
            // In the store: through the opened folder, so a `.locks` (or any folder in
            // it) planted as a symlink is never followed; a symlink as the lock file
            // itself fails O_NOFOLLOW.
            let dir = if self.in_store(path) {
                Some(self.fs.ensure_dir(parent, LOCK_DIR_MODE, self.owner)?)
            } else {
                ensure_dir(parent, self.owner)?;
                None
            };
            let at = dir.as_ref().map_or(path.to_path_buf(), |d| d.join(name));
            let open = |append: bool| {
                OpenOptions::new()
                    .read(true)
                    .append(append)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&at)
            };
            match open(true) {
                Ok(f) => return Ok(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // An existing lock file on a read-only medium: flock needs no write access.
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                    return open(false)
                        .map_err(|e| Error::io(format!("lock file {}", path.display()), e))
                }
                Err(e) => return Err(Error::io(format!("lock file {}", path.display()), e)),
            }
            // Create atomically with its final mode and owner, then link into place.
            let folder = dir.as_ref().map_or(parent.to_path_buf(), |d| d.path());
            let stem = format!(".{}", name.to_string_lossy());
            let tmp = files::TempFile::new(&folder, &stem, LOCK_FILE_MODE, self.owner)?;
            match tmp.persist_new(&at) {
                Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::LockBusy {
            what: format!("lock file {}", path.display()),
            lock: path.to_path_buf(),
            why: LockWhy::Vanishing,
        })
    }
}

/// Create `dir` and its missing parents with `owner` (lock folders; PBS uses the
/// daemon's default mode).
fn ensure_dir(dir: &Path, owner: Owner) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        files::create_dir(d, LOCK_DIR_MODE, owner)?;
    }
    Ok(())
}

/// One non-blocking attempt on an opened lock file.
#[derive(Debug)]
enum Attempt {
    Locked(File),
    Busy,
    /// Locked, but `path` now names another file (its holder destroyed the object and
    /// removed the lock file meanwhile): the lock excludes nobody; open it again.
    Replaced,
}

fn lock_opened(
    file: File,
    path: &Path,
    mode: Mode,
    identity: impl Fn(&Path) -> Option<(u64, u64)>,
) -> Result<Attempt> {
    let attempt = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => {
            // Double stat: the file we locked must still be the one at `path`.
            let ours = file.metadata().ctx(path.display())?;
            if identity(path) == Some((ours.dev(), ours.ino())) {
                Ok(Attempt::Locked(file))
            } else {
                Ok(Attempt::Replaced)
            }
        }
        Err(TryLockError::WouldBlock) => Ok(Attempt::Busy),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("lock {}", path.display()), e)),
    }
}

/// Old scheme: a non-blocking `flock` on the folder itself.
fn lock_dir(fs: &StoreRoot, dir: &Path, mode: Mode, what: &str) -> Result<File> {
    let file = fs.open_dir(dir).map_err(|e| e.context(what))?;
    let attempt = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::LockBusy {
            what: what.to_string(),
            lock: dir.to_path_buf(),
            why: LockWhy::Held,
        }),
        Err(TryLockError::Error(e)) => Err(Error::io(format!("lock {}", dir.display()), e)),
    }
}

/// Held for a whole backup of a group (and for group notes on PBS 4.x).
#[derive(Debug)]
pub struct GroupLock {
    _held: Vec<File>,
}

/// A snapshot locked shared: readers, verify, a backup's base, the manifest
/// transaction. Only `Locker::lock_snapshot_shared` makes one.
#[derive(Debug)]
pub struct SharedSnapshotLock {
    dir: BackupDir,
    _held: Vec<File>,
}

/// A snapshot locked exclusively: a backup of this snapshot, forget, prune, protect.
/// A different type from the shared lock, so nothing can pass one for the other.
#[derive(Debug)]
pub struct ExclusiveSnapshotLock {
    dir: BackupDir,
    _held: Vec<File>,
}

impl SharedSnapshotLock {
    /// The snapshot this lock holds.
    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }
}

impl ExclusiveSnapshotLock {
    /// The snapshot this lock holds.
    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }
}

/// Proof that the manifest lock(s) of one snapshot are held. It has no public
/// constructor: `Locker::lock_manifest` is crate-private and only the manifest
/// transaction functions call it, so nothing else can store a manifest; storing checks
/// that the lock is that of the snapshot written.
#[derive(Debug)]
pub struct ManifestLock {
    dir: BackupDir,
    _held: Vec<File>,
    since: Instant,
}

impl ManifestLock {
    /// The snapshot whose manifest this lock holds.
    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }
}

impl Drop for ManifestLock {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        if held > Duration::from_secs(1) {
            log::warn!(
                "manifest of snapshot {} was locked for {:.1}s; a PBS backup finishing meanwhile waits at most 5s",
                self.dir,
                held.as_secs_f64()
            );
        }
    }
}

/// The datastore `.lock` record lock.
#[derive(Debug)]
pub struct ProcessLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::names::BackupType;

    #[test]
    fn escaping_matches_the_spec_examples() {
        assert_eq!(
            systemd_escape_path("vm/100/2024-05-02T08:11:33Z"),
            "vm-100-2024\\x2d05\\x2d02T08\\x3a11\\x3a33Z"
        );
        assert_eq!(systemd_escape_path("host/my-host"), "host-my\\x2dhost");
        assert_eq!(systemd_escape_path("/.hidden/a.b"), "\\x2ehidden-a.b");
        let l = Locker {
            store_root: "/s".into(),
            fs: StoreRoot::open(Path::new("/")).unwrap(),
            lock_root: "/run/proxmox-backup/locks/store1".into(),
            pbs: true,
            owner: Owner { uid: 0, gid: 0 },
        };
        let ns = BackupNamespace::parse("a/b").unwrap();
        let d = BackupDir::parse(&ns, "vm/100/2024-05-02T08:11:33Z").unwrap();
        let paths = l.manifest_lock_paths(&d);
        assert_eq!(
            paths[0],
            PathBuf::from(
                "/run/proxmox-backup/locks/store1/a:b/vm-100-2024\\x2d05\\x2d02T08\\x3a11\\x3a33Z-.index.json.lck"
            )
        );
        assert_eq!(
            paths[1],
            PathBuf::from(
                "/run/proxmox-backup/locks/store1/ns/a/ns/b/vm/100/2024-05-02T08:11:33Z/2024-05-02T08:11:33Z.index.json.lck"
            )
        );
        let g = BackupGroup::new(BackupNamespace::root(), BackupType::Vm, "100").unwrap();
        assert_eq!(
            l.new_scheme_path(&g.ns, &Locker::group_rel(&g)),
            PathBuf::from("/run/proxmox-backup/locks/store1/vm-100")
        );
        let long =
            BackupGroup::new(BackupNamespace::root(), BackupType::Host, &"x-".repeat(100)).unwrap();
        let p = l.new_scheme_path(&long.ns, &Locker::group_rel(&long));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(p.parent().unwrap().ends_with("hashed"));
        assert!(name.contains("...") && name.len() < 255, "{name}");
    }

    fn temp_store() -> (PathBuf, Locker) {
        let root = std::env::temp_dir().join(format!("pbsfs-lock-{}", files::random_suffix(8)));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join(".lock"), b"").unwrap();
        let owner = Owner::of(&root).unwrap();
        (
            root.clone(),
            Locker::new(&StoreRoot::open(&root).unwrap(), owner, None),
        )
    }

    #[test]
    fn a_held_manifest_lock_makes_a_second_locker_time_out_with_a_clear_error() {
        let (root, l) = temp_store();
        let d = BackupDir::parse(&BackupNamespace::root(), "vm/1/2024-05-02T08:11:33Z").unwrap();
        let held = l.lock_manifest(&d, MANIFEST_LOCK_TIMEOUT).unwrap();
        let t = Instant::now();
        let err = l.lock_manifest(&d, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(matches!(
            err,
            Error::LockBusy {
                why: LockWhy::TimedOut,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("timed out") && msg.contains("vm/1/2024-05-02T08:11:33Z"),
            "{msg}"
        );
        drop(held);
        l.lock_manifest(&d, Duration::from_millis(300)).unwrap();
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn snapshot_locks_share_and_exclude() {
        let (root, l) = temp_store();
        let d = BackupDir::parse(&BackupNamespace::root(), "ct/7/2024-05-02T08:11:33Z").unwrap();
        let a = l.lock_snapshot_shared(&d).unwrap();
        let _b = l.lock_snapshot_shared(&d).unwrap();
        assert!(matches!(
            l.lock_snapshot_exclusive(&d),
            Err(Error::LockBusy {
                why: LockWhy::Held,
                ..
            })
        ));
        drop(a);
        drop(_b);
        let _x = l.lock_snapshot_exclusive(&d).unwrap();
        assert!(matches!(
            l.lock_snapshot_shared(&d),
            Err(Error::LockBusy { .. })
        ));
        let p = l.new_scheme_path(&d.group.ns, &Locker::snapshot_rel(&d));
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, LOCK_FILE_MODE);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_lock_file_replaced_while_waiting_is_not_trusted() {
        let (root, l) = temp_store();
        let d = BackupDir::parse(&BackupNamespace::root(), "ct/7/2024-05-02T08:11:33Z").unwrap();
        let path = l.new_scheme_path(&d.group.ns, &Locker::snapshot_rel(&d));
        // A locker opens the lock file, then loses the race: its holder destroys the
        // snapshot (removing the lock file) and a new holder locks a fresh file there.
        let old = l.open_lock_file(&path).unwrap();
        l.remove_snapshot_lock_files(&d);
        let holder = l.lock_snapshot_exclusive(&d).unwrap();
        // The old file is free to flock, but it is no longer the lock: not trusted.
        assert!(matches!(
            lock_opened(old, &path, Mode::Exclusive, |p| l.identity(p)).unwrap(),
            Attempt::Replaced
        ));
        // And the full call, which reopens, sees the new holder.
        assert!(matches!(
            l.lock_snapshot_exclusive(&d),
            Err(Error::LockBusy { .. })
        ));
        drop(holder);
        let fresh = l.open_lock_file(&path).unwrap();
        assert!(matches!(
            lock_opened(fresh, &path, Mode::Exclusive, |p| l.identity(p)).unwrap(),
            Attempt::Locked(_)
        ));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn process_lock_shared_excludes_exclusive() {
        let (root, l) = temp_store();
        // A store without `.lock` gets one, 0644.
        fs::remove_file(root.join(".lock")).unwrap();
        let s = l.lock_process(false).unwrap();
        let _s2 = l.lock_process(false).unwrap();
        let e = l.lock_process(true).unwrap_err();
        assert!(
            matches!(
                e,
                Error::StoreBusy {
                    exclusive: true,
                    ..
                }
            ),
            "{e}"
        );
        drop((s, _s2));
        let _x = l.lock_process(true).unwrap();
        assert!(l.lock_process(false).is_err());
        assert_eq!(
            fs::metadata(root.join(".lock")).unwrap().mode() & 0o777,
            0o644
        );
        fs::remove_dir_all(root).unwrap();
    }
}
