//! Logs that reach someone: a background mount's server logs to syslog when a daemon
//! listens, else to the file it names when it starts, or to `--log-file`; the digest of
//! a bad chunk is in what it writes. `RUST_LOG` works for every command.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use crate::mount_util::{corrupt_chunk, fixture, is_mounted, poll, Unmount};

const IMAGE: &str = "vm/100/2024-05-02T08:11:33Z/drive-scsi0.img";

/// `pbsfs mount STORE MP EXTRA...` in the background, syslog pointed at `syslog`.
fn mount_bg(store: &Path, mp: &Path, syslog: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["mount", s(store), s(mp)])
        .args(extra)
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .env("PBSFS_SYSLOG_SOCKET", syslog)
        .output()
        .unwrap()
}

fn mountpoint(tmp: &TempDir) -> PathBuf {
    let mp = tmp.join("mnt");
    fs::create_dir(&mp).unwrap();
    fs::canonicalize(&mp).unwrap()
}

/// Read the image through the mount: EIO, for the chunk `corrupt_chunk` damaged.
fn read_fails_with_eio(mp: &Path) {
    let err = fs::read(mp.join(IMAGE)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
}

/// Wait until `file` holds a line naming `digest`; that line.
fn logged_line(file: &Path, digest: &str) -> String {
    let mut found = None;
    let seen = poll(10, || {
        let text = fs::read_to_string(file).unwrap_or_default();
        found = text.lines().find(|l| l.contains(digest)).map(String::from);
        found.is_some()
    });
    assert!(
        seen,
        "{} never named {digest}:\n{}",
        file.display(),
        fs::read_to_string(file).unwrap_or_default()
    );
    found.unwrap()
}

#[test]
fn a_background_mount_logs_bad_chunks_to_syslog() {
    let tmp = TempDir::new("mount-syslog");
    let f = fixture(&tmp);
    let digest = corrupt_chunk(&f, 5);

    let sock = tmp.join("syslog.sock");
    let server = UnixDatagram::bind(&sock).unwrap();
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mp = mountpoint(&tmp);
    let out = mount_bg(&f.store, &mp, &sock, &[]);
    ok(&out);
    let err = stderr(&out);
    let _guard = Unmount(mp.clone());
    assert!(
        !err.contains("logs to"),
        "syslog listens: no file named: {err}"
    );
    read_fails_with_eio(&mp);
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let found = loop {
        let Ok(n) = server.recv(&mut buf) else {
            break None;
        };
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains(&digest.to_hex()) {
            break Some(line);
        }
        seen.push(line);
    };
    let line = found.unwrap_or_else(|| panic!("no syslog line names {digest}; got {seen:?}"));
    assert!(
        line.starts_with("<27>pbsfs[") || line.starts_with("<28>pbsfs["),
        "{line}"
    );
    assert!(
        line.contains("vm/100/2024-05-02T08:11:33Z"),
        "names the snapshot: {line}"
    );
}

#[test]
fn without_a_log_daemon_a_background_mount_logs_to_the_file_it_names() {
    let tmp = TempDir::new("log-fallback");
    let f = fixture(&tmp);
    let digest = corrupt_chunk(&f, 5).to_hex();
    let mp = mountpoint(&tmp);
    // Nobody listens there, as on a machine without journald or rsyslog.
    let out = mount_bg(&f.store, &mp, &tmp.join("no-syslog.sock"), &[]);
    ok(&out);
    let err = stderr(&out);
    let _guard = Unmount(mp.clone());
    let file = err
        .lines()
        .find_map(|l| l.split_once("the mount logs to ").map(|(_, p)| p.trim()))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the mount names no log file: {}", describe(&out)));
    assert!(err.contains("no-syslog.sock"), "says why: {err}");
    // root's default: one file per mount point, under /var/log/pbsfs.
    let name = s(&mp).trim_start_matches('/').replace('/', "-");
    assert_eq!(
        file,
        Path::new("/var/log/pbsfs").join(format!("{name}.log"))
    );
    read_fails_with_eio(&mp);
    let line = logged_line(&file, &digest);
    assert!(
        line.contains("ERROR") && line.contains("vm/100/2024-05-02T08:11:33Z"),
        "{line}"
    );
    drop(_guard);
    fs::remove_file(&file).unwrap();
}

#[test]
fn log_file_chooses_where_a_mount_logs() {
    let tmp = TempDir::new("log-file");
    let f = fixture(&tmp);
    let digest = corrupt_chunk(&f, 5).to_hex();
    let mp = mountpoint(&tmp);
    let file = tmp.join("logs/pbsfs.log");
    let syslog = tmp.join("syslog.sock");
    // Even with a listening syslog, --log-file wins, and the folder is made.
    let listener = UnixDatagram::bind(&syslog).unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = mount_bg(&f.store, &mp, &syslog, &["--log-file", s(&file)]);
    ok(&out);
    let err = stderr(&out);
    let _guard = Unmount(mp.clone());
    assert!(
        !err.contains("logs to"),
        "a chosen file is not announced: {err}"
    );
    read_fails_with_eio(&mp);
    logged_line(&file, &digest);
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("serving "), "{text}");
    assert!(
        listener.recv(&mut [0u8; 64]).is_err(),
        "nothing went to syslog"
    );
    // A plain umount from outside ends it with no false alarm in the log.
    ok(&Command::new("umount").arg(&mp).output().unwrap());
    assert!(poll(10, || fs::read_to_string(&file)
        .unwrap()
        .contains("unmounted ")));
    let text = fs::read_to_string(&file).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_log_file_that_cannot_be_written_fails_the_mount_naming_it() {
    let tmp = TempDir::new("log-bad");
    let f = fixture(&tmp);
    let mp = mountpoint(&tmp);
    fs::write(tmp.join("plain"), "").unwrap();
    let bad = tmp.join("plain/pbsfs.log");
    for extra in [&["--foreground"][..], &[]] {
        let mut args = vec!["--log-file", s(&bad)];
        args.extend_from_slice(extra);
        let out = mount_bg(&f.store, &mp, &tmp.join("none.sock"), &args);
        let err = fails_with(&out, 2);
        assert!(err.contains(s(&tmp.join("plain"))), "{err}");
        assert!(!is_mounted(&mp), "{extra:?}: nothing mounted");
    }
}

#[test]
fn rust_log_works_for_every_command() {
    let tmp = TempDir::new("log-env");
    let store = sparse_store(&tmp);
    let quiet = pbsfs(&["snapshots", s(&store)]);
    ok(&quiet);
    assert!(quiet.stderr.is_empty(), "{}", describe(&quiet));
    for cmd in [&["snapshots"][..], &["groups"], &["gc"]] {
        let mut args = cmd.to_vec();
        args.push(s(&store));
        let out = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "debug")
            .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
            .output()
            .unwrap();
        ok(&out);
        let err = stderr(&out);
        assert!(
            err.contains("DEBUG") && err.contains("opened datastore"),
            "{cmd:?}: {err}"
        );
    }
}
