//! Living inside a PBS-managed datastore: PBS's configuration found for every store PBS
//! knows (removable, through a symlink, through a bind mount), a warning for a store that
//! looks like PBS's but is not listed, GC left to PBS (and its move journal drained when
//! forced), and emptied groups removed only as PBS removes them. Each test builds its own
//! PBS installation in a temp folder (`datastore.cfg`, run dir, mount dir, dpkg status)
//! and hands it to the `pbsfs` child through the env overrides.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;

const T: &str = "2024-01-01T00:00:00Z";
/// The new-scheme snapshot lock of `vm/1/<T>` (spec §5.3).
const SNAP_LOCK: &str = "vm-1-2024\\x2d01\\x2d01T00\\x3a00\\x3a00Z";

/// A PBS installation in a temp folder.
#[derive(Clone)]
struct Pbs {
    etc: PathBuf,
    run: PathBuf,
    mnt: PathBuf,
    dpkg: PathBuf,
}

impl Pbs {
    fn new(tmp: &TempDir) -> Pbs {
        let pbs = Pbs {
            etc: tmp.join("etc"),
            run: tmp.join("run"),
            mnt: tmp.join("mnt"),
            dpkg: tmp.join("dpkg-status"),
        };
        for d in [&pbs.etc, &pbs.run, &pbs.mnt] {
            fs::create_dir_all(d).unwrap();
        }
        pbs
    }

    fn config(&self, text: &str) {
        fs::write(self.etc.join("datastore.cfg"), text).unwrap();
    }

    /// A dpkg status file where `proxmox-backup-server` has `version` (none: not listed);
    /// the client package beside it is newer, so the wrong paragraph would give 3.3.5+.
    fn installed(&self, version: Option<&str>) {
        let mut text = String::from(
            "Package: proxmox-backup-client\nStatus: install ok installed\nVersion: 9.9.9\n\n",
        );
        if let Some(v) = version {
            text += &format!(
                "Package: proxmox-backup-server\nStatus: install ok installed\n\
                 Priority: optional\nVersion: {v}\nDescription: PBS\n server daemon\n\n"
            );
        }
        fs::write(&self.dpkg, text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("PBSFS_PBS_CONFIG_DIR", &self.etc)
            .env("PBSFS_PBS_RUN_DIR", &self.run)
            .env("PBSFS_PBS_MOUNT_DIR", &self.mnt)
            .env("PBSFS_DPKG_STATUS", &self.dpkg);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pbsfs")
    }
}

/// A store at `path` with one 10 KB image snapshot `vm/1/<T>`, made before PBS "knew" it
/// (its local `.locks` removed, so any lock file seen later is PBS's).
fn store_at(tmp: &TempDir, path: &Path) -> PathBuf {
    pbsfs::Datastore::create(path, false).unwrap();
    ok(&backup_image(
        path,
        tmp,
        "vm/1",
        &pseudo_random(10_000, 1),
        T,
    ));
    fs::remove_dir_all(path.join(".locks")).unwrap();
    path.to_path_buf()
}

fn manifest(store: &Path) -> Vec<u8> {
    fs::read(store.join("vm/1").join(T).join("index.json.blob")).unwrap()
}

/// `notes --set` on `vm/1/<T>` through `path` must be refused by the store's read-only
/// maintenance mode (so the store was found), leaving the manifest byte for byte.
#[track_caller]
fn notes_refused_by_maintenance(pbs: &Pbs, path: &Path, store: &Path, name: &str) {
    let before = manifest(store);
    let out = pbs.run(&["notes", s(path), "vm/1/latest", "--set", "x"]);
    let err = fails_with(&out, 2);
    assert!(err.contains("read-only") && err.contains(name), "{err}");
    assert_eq!(
        manifest(store),
        before,
        "a refused edit changed the manifest"
    );
}

#[test]
fn a_removable_store_is_found_at_its_mount_point_through_backing_device() {
    let tmp = TempDir::new("pbs-removable");
    let pbs = Pbs::new(&tmp);
    // PBS mounts a removable store at <mount dir>/<name>; its `path` is relative to the
    // device and names no folder here.
    let store = store_at(&tmp, &pbs.mnt.join("usb1"));
    let section = "datastore: usb1\n\tpath pbs/usb1\n\tbacking-device 6a2f0c1e-8d3b-4d5e\n";
    pbs.config(&format!(
        "{section}\tmaintenance-mode type=read-only,message=rotating disks\n"
    ));
    notes_refused_by_maintenance(&pbs, &store, &store, "usb1");

    // Control: with the mount dir elsewhere the same section names another folder, so
    // nothing matches and the edit goes through: the match above came from
    // backing-device and the mount dir, not from `path`.
    let other = Pbs {
        mnt: tmp.join("elsewhere"),
        ..pbs.clone()
    };
    ok(&other.run(&["notes", s(&store), "vm/1/latest", "--set", "unmanaged"]));
    assert!(!pbs.run.join("locks").exists());
    fs::remove_dir_all(store.join(".locks")).unwrap();

    // Found and writable: the edit takes PBS's lock files under the run dir, none in
    // the store.
    pbs.config(section);
    ok(&pbs.run(&["notes", s(&store), "vm/1/latest", "--set", "managed"]));
    let lock = pbs.run.join("locks/usb1").join(SNAP_LOCK);
    assert!(lock.is_file(), "{} missing", lock.display());
    assert!(
        !store.join(".locks").exists(),
        "a PBS store got local locks"
    );
    assert_eq!(
        ok(&pbs.run(&["notes", s(&store), "vm/1/latest"])),
        "managed"
    );
}

#[test]
fn a_store_reached_through_a_symlink_is_found_either_way() {
    let tmp = TempDir::new("pbs-symlink");
    let pbs = Pbs::new(&tmp);
    fs::create_dir_all(tmp.join("real")).unwrap();
    let store = store_at(&tmp, &tmp.join("real/store1"));
    let link = tmp.join("link");
    std::os::unix::fs::symlink(&store, &link).unwrap();
    let mode = "\tmaintenance-mode type=read-only\n";
    // Configured by its real path, opened through the link.
    pbs.config(&format!("datastore: store1\n\tpath {}\n{mode}", s(&store)));
    notes_refused_by_maintenance(&pbs, &link, &store, "store1");
    // Configured through the link, opened by its real path.
    pbs.config(&format!("datastore: store1\n\tpath {}\n{mode}", s(&link)));
    notes_refused_by_maintenance(&pbs, &store, &store, "store1");
}

/// A bind mount, undone (lazily) before the temp folder is removed.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_store_reached_through_a_bind_mount_is_found_by_device_and_inode() {
    let tmp = TempDir::new("pbs-bind");
    let pbs = Pbs::new(&tmp);
    let store = store_at(&tmp, &tmp.join("store1"));
    let bind = tmp.join("bind");
    fs::create_dir(&bind).unwrap();
    let st = Command::new("mount")
        .args(["--bind", s(&store), s(&bind)])
        .status()
        .unwrap();
    assert!(st.success(), "mount --bind failed");
    let _guard = BindMount(bind.clone());
    // The bind mount's canonical path is its own: only device + inode can match it.
    assert_eq!(fs::canonicalize(&bind).unwrap(), bind);
    pbs.config(&format!(
        "datastore: store1\n\tpath {}\n\tmaintenance-mode type=read-only\n",
        s(&store)
    ));
    notes_refused_by_maintenance(&pbs, &bind, &store, "store1");
}

#[test]
fn a_store_owned_by_backup_but_not_configured_gets_one_warning() {
    let tmp = TempDir::new("pbs-unlisted");
    let pbs = Pbs::new(&tmp);
    let store = store_at(&tmp, &tmp.join("store1"));
    let warning = "PBS's locks are not taken";
    // Root-owned and unlisted: not PBS-like, no warning.
    let out = pbs.run(&["snapshots", s(&store)]);
    ok(&out);
    assert!(!stderr(&out).contains(warning), "{}", stderr(&out));

    let backup = pbsfs::store::pbs_config::backup_user();
    std::os::unix::fs::chown(&store, Some(backup.uid), Some(backup.gid)).unwrap();
    // No datastore.cfg at all, then one that lists another store: warned, once.
    for cfg in [None, Some("datastore: other\n\tpath /srv/other\n")] {
        if let Some(c) = cfg {
            pbs.config(c);
        }
        let out = pbs.run(&["snapshots", s(&store)]);
        ok(&out);
        let err = stderr(&out);
        assert_eq!(err.matches(warning).count(), 1, "{err}");
        assert!(err.contains(s(&store)), "{err}");
    }
    // Listed: PBS's locks are taken, no warning.
    pbs.config(&format!("datastore: store1\n\tpath {}\n", s(&store)));
    let out = pbs.run(&["snapshots", s(&store)]);
    ok(&out);
    assert!(!stderr(&out).contains(warning), "{}", stderr(&out));
}

/// Set every chunk's atime two days back.
fn age_chunks(store: &Path) {
    let old = pbsfs::util::time::now() - 2 * 86_400;
    for p in chunk_files(store) {
        pbsfs::util::sys::set_atime(&p, old).unwrap();
    }
}

/// Back up `seed`'s data as `group` and return the chunk files that backup added.
fn backup_new_chunks(store: &Path, tmp: &TempDir, group: &str, seed: u64) -> Vec<PathBuf> {
    let before = chunk_files(store);
    ok(&backup_image(
        store,
        tmp,
        group,
        &pseudo_random(5 * 4096, seed),
        T,
    ));
    let added: Vec<_> = chunk_files(store)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!added.is_empty());
    added
}

#[test]
fn gc_is_pbs_job_on_a_configured_store_and_a_forced_run_drains_the_move_journal() {
    let tmp = TempDir::new("pbs-gc");
    let pbs = Pbs::new(&tmp);
    let store = sparse_store(&tmp);
    let index = format!("{T}/drive-scsi0.img.fidx");
    // Kept: referenced by a snapshot.
    let mut kept = backup_new_chunks(&store, &tmp, "vm/1", 11);
    // Removed: its snapshot is forgotten.
    backup_new_chunks(&store, &tmp, "vm/2", 12);
    pbsfs_ok(&["forget", s(&store), &format!("vm/2/{T}")]);
    // Kept through the journal only: PBS "moved" this index to where the walk does not
    // look (hidden folders are skipped), as a move racing the walk would leave it.
    kept.extend(backup_new_chunks(&store, &tmp, "vm/3", 13));
    let moved = store.join(".moved/vm/3").join(&index);
    fs::create_dir_all(moved.parent().unwrap()).unwrap();
    fs::copy(store.join("vm/3").join(&index), &moved).unwrap();
    pbsfs_ok(&["forget", s(&store), &format!("vm/3/{T}")]);
    // Removed although listed: its index is outside the store.
    backup_new_chunks(&store, &tmp, "vm/4", 14);
    let outside = tmp.join("outside/drive-scsi0.img.fidx");
    fs::create_dir_all(outside.parent().unwrap()).unwrap();
    fs::copy(store.join("vm/4").join(&index), &outside).unwrap();
    pbsfs_ok(&["forget", s(&store), &format!("vm/4/{T}")]);
    kept.sort();
    age_chunks(&store);

    pbs.config(&format!("datastore: store1\n\tpath {}\n", s(&store)));
    let journal = pbs.run.join("locks/store1/move-journal");
    fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let dotdot = format!("{}/../outside/drive-scsi0.img.fidx", s(&store));
    let vanished = store.join("vm/9").join(&index);
    let entries = [s(&moved), s(&outside), &dotdot, s(&vanished)].join("\n") + "\n";
    fs::write(&journal, &entries).unwrap();

    // Refused: exit 2, PBS's command named, nothing swept, the journal left to PBS.
    let all = chunk_files(&store);
    let out = pbs.run(&["gc", s(&store), "--atime-cutoff", "0"]);
    let err = fails_with(&out, 2);
    assert!(
        err.contains("proxmox-backup-manager garbage-collection start store1"),
        "{err}"
    );
    assert_eq!(chunk_files(&store), all, "a refused gc removed chunks");
    assert!(!store.join(".gc-status").exists());
    assert_eq!(fs::read_to_string(&journal).unwrap(), entries);

    // Forced, while "PBS" appends to the journal under its flock: gc waits for it.
    let held = fs::OpenOptions::new().append(true).open(&journal).unwrap();
    held.lock().unwrap();
    let mut child = pbs
        .command(&["gc", s(&store), "--force"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "gc did not wait for the move journal's lock"
    );
    drop(held);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(9));
    let stdout = ok(&out);
    let err = stderr(&out);
    assert_eq!(chunk_files(&store), kept, "{stdout}\n{err}");
    assert!(err.contains(s(&outside)) && err.contains(&dotdot), "{err}");
    assert_eq!(
        fs::metadata(&journal).unwrap().len(),
        0,
        "journal not drained"
    );
    assert!(store.join(".gc-status").is_file());
    // The snapshot left is whole.
    pbsfs_ok(&["verify", s(&store)]);
}

#[test]
fn an_emptied_group_goes_on_a_plain_store_but_nothing_foreign_goes() {
    let tmp = TempDir::new("pbs-group-plain");
    let store = sparse_store(&tmp);
    ok(&backup_image(&store, &tmp, "vm/1", b"one", T));
    pbsfs_ok(&["notes", s(&store), "vm/1", "--set", "group notes"]);
    pbsfs_ok(&["forget", s(&store), &format!("vm/1/{T}")]);
    assert!(!store.join("vm/1").exists(), "emptied group folder kept");

    // Not recursive: a file pbsfs does not own keeps the folder, untouched.
    ok(&backup_image(&store, &tmp, "vm/2", b"two", T));
    fs::write(store.join("vm/2/foreign.txt"), b"mine").unwrap();
    pbsfs_ok(&["forget", s(&store), &format!("vm/2/{T}")]);
    assert!(
        store.join("vm/2").is_dir(),
        "folder with a foreign file removed"
    );
    assert_eq!(fs::read(store.join("vm/2/foreign.txt")).unwrap(), b"mine");
    assert!(!store.join(format!("vm/2/{T}")).exists());
}

#[test]
fn on_a_pbs_store_an_emptied_group_goes_only_when_new_locking_is_certain() {
    // (old-locking present, installed version, group folder removed)
    for (old_locking, version, removed) in [
        (true, Some("4.2.3-1"), false),
        (false, Some("3.3.5"), true),
        (false, Some("3.3.10-1"), true),
        (false, Some("3.3.4-1"), false),
        (false, None, false),
    ] {
        let tmp = TempDir::new("pbs-group");
        let pbs = Pbs::new(&tmp);
        let store = store_at(&tmp, &tmp.join("store1"));
        let owner = fs::read(store.join("vm/1/owner")).unwrap();
        pbs.config(&format!("datastore: store1\n\tpath {}\n", s(&store)));
        pbs.installed(version);
        if old_locking {
            fs::write(pbs.run.join("old-locking"), b"").unwrap();
        }
        ok(&pbs.run(&["forget", s(&store), &format!("vm/1/{T}")]));
        let case = format!("old-locking {old_locking}, version {version:?}");
        assert!(!store.join(format!("vm/1/{T}")).exists(), "{case}");
        if removed {
            assert!(!store.join("vm/1").exists(), "{case}: group kept");
            assert!(!pbs.run.join("locks/store1/vm-1").exists(), "{case}");
        } else {
            assert!(store.join("vm/1").is_dir(), "{case}: group removed");
            assert_eq!(fs::read(store.join("vm/1/owner")).unwrap(), owner, "{case}");
        }
    }
}
