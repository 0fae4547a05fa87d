//! Shared test helpers: scratch folders (under /var/tmp, not /tmp, so vim behaves as in
//! real use), running the pbsfs binary, building small datastores.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_pbsfs");

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = PathBuf::from("/var/tmp/pbsfs-tests");
        std::fs::create_dir_all(&base).unwrap();
        let p = base.join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            pbsfs::store::files::random_suffix(6)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `pbsfs ARGS...` and capture its output.
pub fn pbsfs(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .expect("run pbsfs")
}

/// Run pbsfs and require success; returns stdout.
#[track_caller]
pub fn pbsfs_ok(args: &[&str]) -> String {
    let out = pbsfs(args);
    assert!(
        out.status.success(),
        "pbsfs {args:?} failed: {}",
        describe(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit status, stdout and stderr of a finished command, for assertion messages (each
/// stream cut to its last 8 KiB: stdout may be a disk image).
pub fn describe(o: &Output) -> String {
    fn tail(b: &[u8]) -> String {
        const MAX: usize = 8192;
        if b.len() <= MAX {
            return String::from_utf8_lossy(b).into_owned();
        }
        format!(
            "[{} bytes, last {MAX}:]\n{}",
            b.len(),
            String::from_utf8_lossy(&b[b.len() - MAX..])
        )
    }
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status,
        tail(&o.stdout),
        tail(&o.stderr)
    )
}

/// Require success; returns stdout (lossy UTF-8).
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "expected success: {}", describe(o));
    stdout(o)
}

/// Require success; returns stdout as raw bytes.
#[track_caller]
pub fn ok_bytes(o: Output) -> Vec<u8> {
    assert!(o.status.success(), "expected success: {}", describe(&o));
    o.stdout
}

/// Require exit code `code` (0 included); returns stdout followed by stderr.
#[track_caller]
pub fn exits(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit code {code}: {}",
        describe(o)
    );
    format!("{}{}", stdout(o), stderr(o))
}

/// Require exit code `code` (not 0); returns stderr.
#[track_caller]
pub fn fails_with(o: &Output, code: i32) -> String {
    assert_ne!(code, 0, "fails_with(.., 0): use ok() or exits()");
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit code {code}: {}",
        describe(o)
    );
    stderr(o)
}

/// Require failure (a nonzero exit or a signal); returns stderr.
#[track_caller]
pub fn fails(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure: {}", describe(o));
    stderr(o)
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A new sparse datastore (prefix folders made on demand) at `dir/store`.
pub fn sparse_store(dir: &TempDir) -> PathBuf {
    let p = dir.join("store");
    pbsfs::Datastore::create(&p, false).expect("create store");
    p
}

/// A new, empty snapshot folder for `snap` (TYPE/ID/TIME, root namespace), its group
/// created as root@pam's, and the lock a backup holds while it writes there.
pub fn new_snapshot_dir(
    ds: &pbsfs::Datastore,
    snap: &str,
) -> (
    pbsfs::store::format::names::BackupDir,
    pbsfs::store::lock::ExclusiveSnapshotLock,
) {
    use pbsfs::store::format::names::{BackupDir, BackupNamespace};
    let d = BackupDir::parse(&BackupNamespace::root(), snap).unwrap();
    ds.create_group(&d.group, "root@pam").unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    (d, lock)
}

/// Every chunk file below `.chunks/`.
pub fn chunk_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for prefix in std::fs::read_dir(store.join(".chunks")).unwrap() {
        let prefix = prefix.unwrap().path();
        if prefix.is_dir() {
            for f in std::fs::read_dir(&prefix).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// `pbsfs snapshots STORE --all --output-format json`, parsed.
pub fn snapshots_json(store: &Path) -> Vec<serde_json::Value> {
    let out = pbsfs_ok(&[
        "snapshots",
        store.to_str().unwrap(),
        "--all",
        "--output-format",
        "json",
    ]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Write `data` to `dir/name` and return the `backup` source naming it as the image
/// `drive-scsi0.img`.
pub fn image_source(dir: &TempDir, name: &str, data: &[u8]) -> String {
    let src = dir.join(name);
    std::fs::write(&src, data).unwrap();
    format!("drive-scsi0.img:{}", s(&src))
}

/// Back up `data` as `drive-scsi0.img` of `group` with 4 KiB chunks.
pub fn backup_image(store: &Path, dir: &TempDir, group: &str, data: &[u8], time: &str) -> Output {
    let name = format!("src-{}", pbsfs::store::files::random_suffix(6));
    let arg = image_source(dir, &name, data);
    pbsfs(&[
        "backup",
        s(store),
        group,
        &arg,
        "--chunk-size",
        "4K",
        "--backup-time",
        time,
    ])
}

/// The folder of real files written by PBS (`../shared/fixtures/pbs-upstream`, read in
/// place, never copied). When it is absent: with `PBSFS_REQUIRE_FIXTURES=1` (CI) the
/// calling test fails; otherwise the skip is recorded as one line in the file named by
/// `PBSFS_SKIP_LOG` (which `scripts/test.sh` counts as SKIPPED in its total line) and
/// `None` is returned, so the caller returns early.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/pbs-upstream");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("PBSFS_REQUIRE_FIXTURES").as_deref() != Ok("1"),
        "{} is absent and PBSFS_REQUIRE_FIXTURES=1",
        dir.display()
    );
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    eprintln!("SKIPPED {test}: {} is absent", dir.display());
    if let Some(log) = std::env::var_os("PBSFS_SKIP_LOG") {
        use std::io::Write;
        // One short line per skip: O_APPEND keeps parallel tests' lines whole.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open PBSFS_SKIP_LOG");
        f.write_all(format!("{test}\n").as_bytes())
            .expect("write PBSFS_SKIP_LOG");
    }
    None
}
