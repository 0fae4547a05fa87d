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
            pbsfs::datastore::files::random_suffix(6)
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
pub fn pbsfs_ok(args: &[&str]) -> String {
    let out = pbsfs(args);
    assert!(
        out.status.success(),
        "pbsfs {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
