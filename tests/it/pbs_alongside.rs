//! Saves through a mount of a store a running PBS uses, its lock folders pointed at a
//! test folder (`PBSFS_PBS_CONFIG_DIR`, `PBSFS_PBS_RUN_DIR`) and its locks held by real
//! separate processes (`flock` from util-linux) on PBS's paths (spec §5.2, §5.3,
//! §11.7): a held manifest lock, in the new scheme and then the old, makes a notes save
//! wait its 5 s deadline and fail with EAGAIN, changing nothing, and the next save after
//! the release succeeds; a snapshot held exclusively (a backup, prune or protect of it)
//! fails a save at once; a group lock (a running backup of the group) does not stop
//! snapshot notes. The errno is the one the writing process sees on close.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::common::*;
use crate::mount_util::*;

const TIME: &str = "2024-05-02T08:11:33Z";
/// New-scheme names of vm/100 and its snapshot at TIME (systemd-escaped, spec §5.3).
const GROUP_LOCK: &str = "vm-100";
const SNAP_LOCK: &str = "vm-100-2024\\x2d05\\x2d02T08\\x3a11\\x3a33Z";

/// The fixture's store, configured as PBS datastore `s1`, and PBS's run dir.
struct Pbs {
    f: Fixture,
    etc: PathBuf,
    run: PathBuf,
}

impl Pbs {
    fn new(tmp: &TempDir) -> Pbs {
        let f = fixture(tmp);
        let etc = tmp.join("etc");
        let run = tmp.join("run");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(run.join("locks/s1")).unwrap();
        let cfg = format!("datastore: s1\n\tpath {}\n", s(&f.store));
        fs::write(etc.join("datastore.cfg"), cfg).unwrap();
        Pbs { f, etc, run }
    }

    fn locks(&self) -> PathBuf {
        self.run.join("locks/s1")
    }

    /// `pbsfs mount` with PBS's configuration: it takes PBS's locks.
    fn mount(&self, mp: &Path) -> Mounted {
        let env = [
            ("PBSFS_PBS_CONFIG_DIR", self.etc.as_os_str()),
            ("PBSFS_PBS_RUN_DIR", self.run.as_os_str()),
            (
                "PBSFS_DPKG_STATUS",
                "/nonexistent-pbsfs-test-dpkg-status".as_ref(),
            ),
        ];
        Mounted::start_with(&self.f.store, mp, &[], &env)
    }

    fn manifest(&self) -> Vec<u8> {
        fs::read(self.f.ds.snapshot_path(&self.f.d1).join("index.json.blob")).unwrap()
    }
}

/// Another process holding `flock -x` on each of `paths` (files are created, folders
/// locked as they are), until dropped: then its whole process group is killed and the
/// locks are checked free.
struct Holder {
    child: Child,
    paths: Vec<PathBuf>,
}

impl Holder {
    fn new(tmp: &TempDir, paths: &[PathBuf]) -> Holder {
        let ready = tmp.join(format!("ready-{}", pbsfs::store::files::random_suffix(6)));
        // Nested: `flock -x A flock -x B sh -c 'touch READY; exec sleep 120'`.
        let mut cmd = Command::new("flock");
        cmd.arg("-x").arg(&paths[0]);
        for p in &paths[1..] {
            cmd.arg("flock").arg("-x").arg(p);
        }
        cmd.args(["sh", "-c", &format!("touch {}; exec sleep 120", s(&ready))]);
        let child = cmd.process_group(0).spawn().unwrap();
        assert!(poll(10, || ready.exists()), "the holder took its locks");
        Holder {
            child,
            paths: paths.to_vec(),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.child.id())])
            .output();
        let _ = self.child.wait();
        for p in &self.paths {
            let free = || {
                Command::new("flock")
                    .args(["-n", "-x"])
                    .arg(p)
                    .arg("true")
                    .status()
                    .is_ok_and(|s| s.success())
            };
            assert!(poll(10, free), "{} released", p.display());
        }
    }
}

/// Save `text` to `path` as a writer does (open for writing, write, close) and return
/// the errno it saw (0: saved) and how long open to close took.
fn save(path: &Path, text: &str) -> (i32, f64) {
    const SCRIPT: &str = r#"
import sys, time
t = time.monotonic()
try:
    f = open(sys.argv[1], 'w')
    f.write(sys.argv[2])
    f.close()
    e = 0
except OSError as err:
    e = err.errno
print(e, time.monotonic() - t)
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-I", "-c", SCRIPT])
        .arg(path)
        .arg(text)
        .output()
        .unwrap();
    let line = ok(&out);
    let mut it = line.split_whitespace();
    let errno = it.next().unwrap().parse().unwrap();
    let secs = it.next().unwrap().parse().unwrap();
    (errno, secs)
}

#[test]
fn a_held_manifest_lock_fails_a_save_after_its_deadline_and_the_next_save_succeeds() {
    let tmp = TempDir::new("pbs-manifest-lock");
    let pbs = Pbs::new(&tmp);
    let m = pbs.mount(&tmp.join("mnt"));
    let notes = m.path(&format!("vm/100/{TIME}/notes"));
    let locks = pbs.locks();
    let schemes = [
        ("new", locks.join(format!("{SNAP_LOCK}-.index.json.lck"))),
        (
            "old",
            locks.join(format!("vm/100/{TIME}/{TIME}.index.json.lck")),
        ),
    ];
    let mut value = "first\n".to_string();
    for (scheme, lock) in schemes {
        fs::create_dir_all(lock.parent().unwrap()).unwrap();
        let before = pbs.manifest();
        let holder = Holder::new(&tmp, std::slice::from_ref(&lock));
        let (errno, secs) = save(&notes, "while locked\n");
        assert_eq!(
            errno,
            libc::EAGAIN,
            "{scheme} scheme; log:\n{}",
            m.log_text()
        );
        assert!(
            (4.5..=10.0).contains(&secs),
            "{scheme} scheme: failed after {secs:.2} s, the deadline is 5 s"
        );
        assert_eq!(pbs.manifest(), before, "{scheme} scheme: nothing changed");
        drop(holder);
        // The failed save is not kept for later: reading commits nothing.
        assert_eq!(fs::read_to_string(&notes).unwrap(), value);
        assert_eq!(pbs.manifest(), before, "{scheme} scheme: still nothing");
        value = format!("after the {scheme} lock\n");
        let (errno, secs) = save(&notes, &value);
        assert_eq!(errno, 0, "{scheme} scheme: saved after {secs:.2} s");
        assert_eq!(notes_of(&pbs.f, &pbs.f.d1), value);
    }
    m.unmount();
}

#[test]
fn a_snapshot_held_exclusively_fails_a_save_at_once_and_a_group_lock_does_not() {
    let tmp = TempDir::new("pbs-snapshot-lock");
    let pbs = Pbs::new(&tmp);
    let m = pbs.mount(&tmp.join("mnt"));
    let notes = m.path(&format!("vm/100/{TIME}/notes"));
    let snap_dir = pbs.f.ds.snapshot_path(&pbs.f.d1);
    // A backup, prune or protect of the snapshot: the new scheme's lock file, or the
    // old scheme's flock on the snapshot folder.
    for (scheme, lock) in [("new", pbs.locks().join(SNAP_LOCK)), ("old", snap_dir)] {
        let before = pbs.manifest();
        let holder = Holder::new(&tmp, std::slice::from_ref(&lock));
        let (errno, secs) = save(&notes, "while a backup runs\n");
        drop(holder);
        assert_eq!(
            errno,
            libc::EAGAIN,
            "{scheme} scheme; log:\n{}",
            m.log_text()
        );
        // At once: no wait for the 5 s manifest deadline (the bound leaves room for a
        // loaded machine; the wait would take at least 5 s).
        assert!(secs < 2.5, "{scheme} scheme: failed after {secs:.2} s");
        assert_eq!(pbs.manifest(), before, "{scheme} scheme: nothing changed");
    }
    assert_eq!(notes_of(&pbs.f, &pbs.f.d1), "first\n");

    // A running backup of the group holds its group lock (both schemes): snapshot
    // notes of the group's finished snapshots still save.
    let group_dir = pbs.f.store.join("vm/100");
    let holder = Holder::new(&tmp, &[pbs.locks().join(GROUP_LOCK), group_dir]);
    let (errno, secs) = save(&notes, "during a backup\n");
    assert_eq!(errno, 0, "saved after {secs:.2} s; log:\n{}", m.log_text());
    assert_eq!(notes_of(&pbs.f, &pbs.f.d1), "during a backup\n");
    drop(holder);
    m.unmount();
}
