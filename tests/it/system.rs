//! pbsfs as a system file system: mount(8) with `-t fuse.pbsfs` and a temporary fstab
//! (`mount -T`), through the helper `/sbin/mount.fuse.pbsfs` installed for each test
//! and removed after; mount options passed through (`ns=`, `cache_size=`); bad options
//! refused with nothing mounted; mount.fuse3's `pbsfs SOURCE MOUNTPOINT -o` call; `umount`.
//! The option translation itself is unit-tested in `src/commands/mount_helper.rs`.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::common::{describe, fails, ok, TempDir, BIN};
use crate::mount_util::*;

const HELPER: &str = "/sbin/mount.fuse.pbsfs";
/// One test at a time owns the helper (tests run on parallel threads).
static HELPER_LOCK: Mutex<()> = Mutex::new(());

/// `/sbin/mount.fuse.pbsfs` -> this build's pbsfs while alive; removed on drop, only
/// when it is ours. A link to this build left by a killed run counts as ours; anything
/// else there (an installed package) fails the test rather than being replaced.
struct Helper {
    _lock: MutexGuard<'static, ()>,
}

impl Helper {
    fn install() -> Helper {
        let lock = HELPER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        match fs::read_link(HELPER) {
            Ok(t) if t == Path::new(BIN) => {}
            Ok(t) => panic!(
                "{HELPER} exists and links to {} (not this build): remove it (dpkg -r pbsfs) \
                 to run these tests",
                t.display()
            ),
            Err(_) if fs::symlink_metadata(HELPER).is_ok() => {
                panic!("{HELPER} exists and is not ours: remove it to run these tests")
            }
            Err(_) => std::os::unix::fs::symlink(BIN, HELPER).unwrap(),
        }
        Helper { _lock: lock }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if fs::read_link(HELPER).is_ok_and(|t| t == Path::new(BIN)) {
            let _ = fs::remove_file(HELPER);
        }
    }
}

/// A fixture store and an empty, canonical mountpoint.
fn setup(tag: &str) -> (TempDir, Fixture, PathBuf) {
    let tmp = TempDir::new(tag);
    let f = fixture(&tmp);
    let mp = tmp.join("mnt");
    fs::create_dir(&mp).unwrap();
    let mp = fs::canonicalize(&mp).unwrap();
    (tmp, f, mp)
}

/// Run `prog ARGS` with the tests' PBS config folder (mount(8) passes the environment
/// on to its helper when run by root).
fn run(prog: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(prog);
    c.args(args)
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Pids of the serving processes of background mounts on `mp` (`--ready-fd` in argv).
fn servers_of(mp: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&&b"--ready-fd"[..]) && args.contains(&mp.as_os_str().as_encoded_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// `umount MP` succeeds, the mount is gone and its serving process ends.
#[track_caller]
fn umount_ends_it(mp: &Path) {
    let servers = servers_of(mp);
    assert_eq!(servers.len(), 1, "one serving process: {servers:?}");
    ok(&run("umount", &[mp.to_str().unwrap()], &[]));
    assert!(!is_mounted(mp));
    assert!(
        poll(30, || servers_of(mp).is_empty()),
        "server {servers:?} ended"
    );
}

/// The read-only fixture mount answers: listing, a config's bytes, notes refused (EROFS).
#[track_caller]
fn serves_read_only(f: &Fixture, mp: &Path) {
    let mut root: Vec<String> = fs::read_dir(mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(root, ["ct", "ns", "vm"]);
    let snap = mp.join("vm/100/2024-05-02T08:11:33Z");
    assert_eq!(fs::read(snap.join("qemu-server.conf")).unwrap(), f.conf);
    let err = fs::write(snap.join("notes"), "changed\n").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(notes_of(f, &f.d1), "first\n");
}

#[test]
fn mount_t_fuse_pbsfs_mounts_read_only_and_umount_ends_it() {
    let (_tmp, f, mp) = setup("sys-mount-t");
    let _helper = Helper::install();
    let _guard = Unmount(mp.clone());
    let (st, m) = (f.store.to_str().unwrap(), mp.to_str().unwrap());
    let out = run(
        "mount",
        &["-t", "fuse.pbsfs", st, m, "-o", "ro,allow_other"],
        &[],
    );
    ok(&out);
    assert!(is_mounted(&mp), "mounted when mount(8) returns");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(m))
        .unwrap();
    // Type `fuse.pbsfs`, as findmnt and `mount -t` show it, and the source as fstab
    // names it (fsname=SOURCE, as sshfs does).
    let source = format!(" {st}");
    assert!(
        line.contains(&format!(" - fuse.pbsfs{source} ")),
        "type, source: {line}"
    );
    assert!(line.split(' ').nth(5).unwrap().starts_with("ro"), "{line}");
    serves_read_only(&f, &mp);
    umount_ends_it(&mp);
}

#[test]
fn an_fstab_line_mounts_with_mount_t_fstab_file() {
    let (tmp, f, mp) = setup("sys-fstab");
    let _helper = Helper::install();
    let _guard = Unmount(mp.clone());
    let fstab = tmp.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# pbsfs test\n{} {} fuse.pbsfs ro,allow_other,nofail 0 0\n",
            f.store.display(),
            mp.display()
        ),
    )
    .unwrap();
    let fstab = fstab.to_str().unwrap();
    ok(&run("mount", &["-T", fstab, mp.to_str().unwrap()], &[]));
    serves_read_only(&f, &mp);
    // `mount -a` again finds the line mounted (source and target match) and skips it.
    let again = ok(&run("mount", &["-a", "-v", "-T", fstab], &[]));
    assert!(again.contains("already mounted"), "{again}");
    assert_eq!(servers_of(&mp).len(), 1);
    umount_ends_it(&mp);
}

#[test]
fn ns_and_cache_size_options_reach_the_mount() {
    let (tmp, f, mp) = setup("sys-opts");
    let _helper = Helper::install();
    let _guard = Unmount(mp.clone());
    // The background server logs to syslog: catch it on a socket of our own.
    let sock = tmp.join("syslog.sock");
    let log = UnixDatagram::bind(&sock).unwrap();
    log.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (st, m) = (f.store.to_str().unwrap(), mp.to_str().unwrap());
    let opts = "ns=prod,cache_size=3M,noauto,_netdev,x-systemd.automount,comment=t";
    let env = [("PBSFS_SYSLOG_SOCKET", sock.as_path())];
    ok(&run(
        "mount",
        &["-t", "fuse.pbsfs", st, m, "-o", opts],
        &env,
    ));
    let root: Vec<_> = fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(root, ["host"], "namespace prod is the root");
    assert!(mp.join("host/web/latest/disk.img").exists());
    let servers = servers_of(&mp);
    assert_eq!(servers.len(), 1, "{servers:?}");
    // SIGUSR1: the statistics line gives the cache's size.
    send_signal(servers[0], "USR1");
    let mut buf = [0u8; 8192];
    let mut seen = Vec::new();
    let stats = loop {
        let n = log
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; got {seen:?}"));
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains("chunk cache:") {
            break line;
        }
        seen.push(line);
    };
    assert!(
        stats.contains(&format!("of {} bytes in use", 3 << 20)),
        "{stats}"
    );
    // Not read-only: no `ro` was given.
    fs::write(mp.join("host/web/latest/notes"), "from fstab\n").unwrap();
    assert_eq!(notes_of(&f, &f.host), "from fstab\n");
    umount_ends_it(&mp);
}

/// `kill -SIG pid` through the kill(1) tool (no unsafe in tests).
fn send_signal(pid: i32, sig: &str) {
    ok(&run("kill", &[&format!("-{sig}"), &pid.to_string()], &[]));
}

#[test]
fn a_bad_option_fails_naming_it_and_mounts_nothing() {
    let (_tmp, f, mp) = setup("sys-bad");
    let _helper = Helper::install();
    let _guard = Unmount(mp.clone());
    let (st, m) = (f.store.to_str().unwrap(), mp.to_str().unwrap());
    for (opts, names) in [
        ("ro,bogus_opt", "'bogus_opt'"),
        ("ro,cache_size=lots", "lots"),
        ("ns", "'ns'"),
        ("ns=nosuchns", "nosuchns"),
    ] {
        let out = run("mount", &["-t", "fuse.pbsfs", st, m, "-o", opts], &[]);
        let err = fails(&out);
        assert!(err.contains(names), "-o {opts}: {}", describe(&out));
        assert!(!is_mounted(&mp), "-o {opts}: nothing mounted");
        assert!(servers_of(&mp).is_empty(), "-o {opts}: no server left");
    }
}

#[test]
fn mount_fuse3_runs_pbsfs_source_mountpoint_dash_o() {
    // Without the helper, mount(8) falls back to mount.fuse3, which runs the program of
    // the type from PATH as `pbsfs SOURCE MOUNTPOINT -o OPTIONS`.
    let (_tmp, f, mp) = setup("sys-fuse3");
    let _guard = Unmount(mp.clone());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let (st, m) = (f.store.to_str().unwrap(), mp.to_str().unwrap());
    let out = Command::new("mount.fuse3")
        .args([st, m, "-t", "fuse.pbsfs", "-o", "ro,allow_other"])
        .env("PATH", path)
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .unwrap();
    ok(&out);
    serves_read_only(&f, &mp);
    umount_ends_it(&mp);
}
