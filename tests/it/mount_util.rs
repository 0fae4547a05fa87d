//! Helpers of the mount tests: datastores built with the library's primitives, and real
//! mounts (foreground `pbsfs mount` with its log captured, readiness polled in
//! /proc/self/mountinfo, always unmounted on drop).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbsfs::store::files::write_index_file;
use pbsfs::store::format::blob;
use pbsfs::store::format::index::fixed::FixedIndex;
use pbsfs::store::format::manifest::{FileEntry, Manifest};
use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use pbsfs::{Datastore, Digest};

use crate::common::{describe, pseudo_random, TempDir, BIN};

/// One snapshot to build.
pub struct SnapSpec<'a> {
    pub ns: &'a str,
    pub ty: BackupType,
    pub id: &'a str,
    pub time: i64,
    /// `(name.img, content, chunk size)`
    pub images: Vec<(&'a str, Vec<u8>, u64)>,
    /// `(name.conf, content)`
    pub blobs: Vec<(&'a str, Vec<u8>)>,
    pub notes: Option<&'a str>,
}

impl<'a> SnapSpec<'a> {
    pub fn vm(id: &'a str, time: i64) -> SnapSpec<'a> {
        SnapSpec {
            ns: "",
            ty: BackupType::Vm,
            id,
            time,
            images: Vec::new(),
            blobs: Vec::new(),
            notes: None,
        }
    }
}

/// Write a finished snapshot the way a backup does; returns its folder.
pub fn make_snapshot(ds: &Datastore, spec: &SnapSpec) -> BackupDir {
    let ns = BackupNamespace::parse(spec.ns).unwrap();
    if !ns.is_root() {
        ds.create_namespace(&ns).unwrap();
    }
    let g = BackupGroup::new(ns, spec.ty, spec.id).unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let d = BackupDir::new(g, spec.time).unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    let dir = ds.snapshot_path(&d);
    let mut m = Manifest::new(&d);
    for (name, data, cs) in &spec.images {
        let digests: Vec<Digest> = data
            .chunks(*cs as usize)
            .map(|c| ds.chunk_store().insert_plain(c).unwrap().0)
            .collect();
        let idx = FixedIndex::new(data.len() as u64, *cs, digests, spec.time).unwrap();
        let file = format!("{name}.fidx");
        write_index_file(&dir.join(&file), &idx.to_bytes(), ds.owner()).unwrap();
        m.add_file(&FileEntry {
            filename: file,
            crypt_mode: pbsfs::store::format::manifest::CryptMode::None,
            size: data.len() as u64,
            csum: idx.csum,
        });
    }
    for (name, data) in &spec.blobs {
        let enc = blob::encode(data, true).unwrap();
        let file = format!("{name}.blob");
        fs::write(dir.join(&file), &enc).unwrap();
        m.add_file(&FileEntry {
            filename: file,
            crypt_mode: pbsfs::store::format::manifest::CryptMode::None,
            size: enc.len() as u64,
            csum: Digest::of(&enc),
        });
    }
    if let Some(n) = spec.notes {
        m.unprotected_mut().insert("notes".into(), n.into());
    }
    ds.create_manifest(&d, &m, &lock).unwrap();
    release_lock(ds, &d, lock);
    d
}

pub const T1: i64 = 1_714_637_493; // 2024-05-02T08:11:33Z
pub const T2: i64 = 1_714_723_893; // 2024-05-03T08:11:33Z

/// A store with: vm/100 (two snapshots; images of 1 MiB + 300 KiB and a config blob),
/// ct/200 (one snapshot), and namespace `prod` with host/web (one snapshot).
pub struct Fixture {
    pub store: PathBuf,
    pub ds: Datastore,
    pub d1: BackupDir,
    pub d2: BackupDir,
    pub ct: BackupDir,
    pub host: BackupDir,
    pub img1: Vec<u8>,
    pub img2: Vec<u8>,
    pub conf: Vec<u8>,
}

pub fn fixture(tmp: &TempDir) -> Fixture {
    let store = tmp.join("store");
    let ds = Datastore::create(&store, false).unwrap();
    let img1 = pseudo_random(1 << 20, 1);
    let mut img2 = pseudo_random(300 * 1024 + 17, 2);
    img2[1000..5000].fill(0);
    let conf = b"boot: order=scsi0\nmemory: 2048\n".to_vec();
    let mut s1 = SnapSpec::vm("100", T1);
    s1.images = vec![("drive-scsi0.img", img1.clone(), 64 * 1024)];
    s1.blobs = vec![("qemu-server.conf", conf.clone())];
    s1.notes = Some("first\n");
    let d1 = make_snapshot(&ds, &s1);
    let mut s2 = SnapSpec::vm("100", T2);
    s2.images = vec![
        ("drive-scsi0.img", img1.clone(), 64 * 1024),
        ("drive-scsi1.img", img2.clone(), 16 * 1024),
    ];
    s2.blobs = vec![("qemu-server.conf", conf.clone())];
    let d2 = make_snapshot(&ds, &s2);
    let mut s3 = SnapSpec::vm("200", T1);
    s3.ty = BackupType::Ct;
    s3.blobs = vec![("pct.conf", b"arch: amd64\n".to_vec())];
    let ct = make_snapshot(&ds, &s3);
    let mut s4 = SnapSpec::vm("web", T2);
    s4.ns = "prod";
    s4.ty = BackupType::Host;
    s4.images = vec![("disk.img", pseudo_random(5000, 4), 4096)];
    let host = make_snapshot(&ds, &s4);
    Fixture {
        store,
        ds,
        d1,
        d2,
        ct,
        host,
        img1,
        img2,
        conf,
    }
}

/// Is `mp` a mount point (in this process's mount namespace)?
pub fn is_mounted(mp: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mp.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// Poll `cond` every 10 ms for up to `secs`; true when it held.
pub fn poll(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running foreground mount. Dropping it unmounts (lazily if need be) and reaps it.
pub struct Mounted {
    pub mp: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Mounted {
    /// `pbsfs mount STORE MP --foreground EXTRA...`, returned once mounted; no PBS
    /// configuration is found.
    pub fn start(store: &Path, mp: &Path, extra: &[&str]) -> Mounted {
        let no_pbs = [(
            "PBSFS_PBS_CONFIG_DIR",
            "/nonexistent-pbsfs-test-config".as_ref(),
        )];
        Mounted::start_with(store, mp, extra, &no_pbs)
    }

    /// `start` with the environment `env` (e.g. a test's own PBS configuration).
    pub fn start_with(
        store: &Path,
        mp: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Mounted {
        fs::create_dir_all(mp).unwrap();
        let mp = fs::canonicalize(mp).unwrap();
        let log = mp.with_extension("log");
        let child = Command::new(BIN)
            .arg("mount")
            .arg(store)
            .arg(&mp)
            .arg("--foreground")
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "pbsfs=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            mp,
            log,
            child: Some(child),
        };
        let ok = poll(30, || {
            is_mounted(&m.mp) || m.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        assert!(
            ok && is_mounted(&m.mp),
            "mount did not come up; log:\n{}",
            m.log_text()
        );
        m
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Saves committed so far (one log line per manifest or group-notes transaction).
    pub fn commits(&self) -> usize {
        self.log_text().matches("commit: ").count()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    /// `pbsfs umount`, then wait for the server to exit cleanly.
    pub fn unmount(mut self) {
        let out = Command::new(BIN)
            .arg("umount")
            .arg(&self.mp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "umount: {}\nmount log:\n{}",
            describe(&out),
            self.log_text()
        );
        let mut child = self.child.take().unwrap();
        assert!(
            poll(30, || child.try_wait().unwrap().is_some()),
            "server did not exit; log:\n{}",
            self.log_text()
        );
        let st = child.wait().unwrap();
        assert!(st.success(), "server {st}; log:\n{}", self.log_text());
        assert!(!is_mounted(&self.mp), "log:\n{}", self.log_text());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        force_unmount(&self.mp);
        if let Some(mut c) = self.child.take() {
            if !poll(10, || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Run `cmd` with `sh -c`.
pub fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

/// A snapshot's notes as the library reads them.
pub fn notes_of(f: &Fixture, d: &BackupDir) -> String {
    f.ds.load_manifest(d)
        .unwrap()
        .notes()
        .unwrap_or("")
        .to_string()
}

/// Unmounts on drop, for background mounts (which leave no child handle to reap).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

/// Detach `mp` if it is mounted, lazily, whatever state its server is in.
pub fn force_unmount(mp: &Path) {
    if !is_mounted(mp) {
        return;
    }
    let ok = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mp)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(mp).status();
    }
}

/// Flip one bit in the middle of the chunk `index` of the fixture's first image
/// (64 KiB chunks, shared by both vm/100 snapshots); returns its digest.
pub fn corrupt_chunk(f: &Fixture, index: usize) -> Digest {
    let idx =
        f.ds.read_index(&f.ds.snapshot_path(&f.d1).join("drive-scsi0.img.fidx"))
            .unwrap();
    let digest = idx.chunk_info(index).unwrap().digest;
    let path = f.ds.chunk_store().chunk_path(&digest);
    let mut raw = fs::read(&path).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x40;
    fs::write(&path, &raw).unwrap();
    digest
}

/// Release a snapshot lock the test took and wait until it is free for others. Tests
/// run on threads of one process that also spawns children: a child forked while the
/// lock was held keeps a copy of its open file description (and so the lock) until its
/// exec closes it, so a CLI run right after the drop could still find it locked.
pub fn release_lock(
    ds: &Datastore,
    d: &BackupDir,
    lock: pbsfs::store::lock::ExclusiveSnapshotLock,
) {
    drop(lock);
    assert!(
        poll(10, || ds.locker().lock_snapshot_shared(d).is_ok()),
        "snapshot {d} still locked after its lock was dropped"
    );
}
