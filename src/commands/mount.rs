//! `pbsfs mount` and `pbsfs umount`. A foreground mount serves until unmounted or sent
//! SIGINT/SIGTERM (then it unmounts itself). A background mount re-executes this binary
//! with `--foreground --ready-fd 1` in a new session (a threaded process cannot fork
//! safely) and returns once that child reports the mount answers, or prints the child's
//! error and fails. The child logs to syslog (see `logging.rs`); `--foreground` logs to
//! stderr. `RUST_LOG` sets the level of both.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::MountArgs;
use crate::fuse::{self, MountOpts};
use crate::store::Datastore;
use crate::util::error::{exit, Error, IoContext, Result};
use crate::util::sys;
use crate::vfs::{Options, Vfs};

/// Verified chunks kept in memory by default: 6 chunks of the default 4 MiB size, room
/// for the chunk a sequential reader is in plus the `READAHEAD_CHUNKS` (5) read, decoded
/// and verified ahead of it (readahead never evicts a chunk fetched ahead and not read
/// yet, so two readers at once share the room instead of evicting each other's). More
/// buys little: archive content stays in the kernel's page cache (`keep_cache`), so the
/// chunk cache only bridges the READs of one chunk and readahead, and every cached chunk
/// is resident memory of the mount. Measured on cold reads of a 1 GiB image, the mount's
/// peak RSS was 54-55 MiB with 24 MiB and 61-63 MiB with 32 MiB (the target: 64
/// MiB), at the same read speed; with buffers recycled (below) 43-48 MiB with 24 MiB.
/// After `ls -lR` of a 10,000-file pxar tree (whose 16 MiB chunk the cache then held)
/// and three reads of the image: 81-87 MiB, now 56-58 MiB, since chunk files are
/// decoded as they are read and the pool reuses only buffers that fit (`cache.rs`).
const DEFAULT_CACHE_SIZE: u64 = 24 << 20;
/// glibc malloc limits of the serving process (`sys::bound_malloc`), measured on cold
/// reads of a 1 GiB image: with glibc's defaults (8 arenas per core, dynamic thresholds)
/// and a 32 MiB cache the peak RSS was 80-140 MiB after one read and grew with each
/// further one, as freed chunk buffers stayed in fragmented heaps. Two arenas serve the
/// mount's few threads; blocks from 2 MiB up (decoded 4 MiB chunks, chunk files) are
/// mmapped, so a freed one goes back to the system, while smaller ones come from the
/// heap; 8 MiB of free heap top stays for reuse (without it every freed buffer was
/// trimmed and faulted in again). A fresh mmapped buffer is faulted in page by page
/// (1,024 faults per 4 MiB), so the chunk cache recycles its buffers: a chunk is decoded
/// into the buffer of the one it evicts or a pooled one. A cold
/// 1 GiB read takes about 10,000 page faults (300,000-390,000 when every chunk and chunk
/// file had a fresh buffer).
const MALLOC_ARENAS: i32 = 2;
const MALLOC_MMAP_THRESHOLD: i32 = 2 << 20;
const MALLOC_TRIM_THRESHOLD: i32 = 8 << 20;
const READY: &str = "ready";

/// Everything checked before mounting, in both the parent and the serving process
/// (the mountpoint is neither a FUSE mountpoint already nor, without `-o nonempty`,
/// a folder with content).
struct Prepared {
    ds: Datastore,
    mountpoint: PathBuf,
    mount: MountOpts,
    vfs: Options,
}

/// Parse `-o`: the mount options, and whether `nonempty` was given. `nonempty` is
/// pbsfs's own (FUSE 3 has no such option): it is never passed to the kernel.
fn parse_options(list: &[String], fsname: String) -> Result<(MountOpts, bool)> {
    let mut nonempty = false;
    let mut o = MountOpts {
        fsname,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(4),
        ..MountOpts::default()
    };
    for opt in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match opt {
            "ro" => o.read_only = true,
            "rw" => o.read_only = false,
            "allow_other" => o.allow_other = true,
            "allow_root" => o.allow_root = true,
            "default_permissions" => o.default_permissions = true,
            "auto_unmount" => o.auto_unmount = true,
            "nonempty" => nonempty = true,
            "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
            | "sync" | "async" | "dirsync" => o.flags.push(opt.to_string()),
            _ => {
                if let Some(v) = opt.strip_prefix("fsname=") {
                    o.fsname = v.to_string();
                } else if let Some(v) = opt.strip_prefix("subtype=") {
                    o.subtype = Some(v.to_string());
                } else {
                    return Err(Error::invalid(
                        format!("mount option '{opt}'"),
                        "unknown (known: ro, rw, allow_other, allow_root, \
                         default_permissions, auto_unmount, nonempty, fsname=, subtype=, dev, \
                         nodev, suid, nosuid, exec, noexec, atime, noatime, sync, async, dirsync)",
                    ));
                }
            }
        }
    }
    if o.auto_unmount && !o.allow_other && !o.allow_root {
        return Err(Error::invalid(
            "mount option auto_unmount",
            "needs allow_other or allow_root",
        ));
    }
    // Without permission checks every local user could write what the mount lets its
    // owner write: rewrite notes, or forge a verify_state `ok` that verify then trusts.
    if o.allow_other && !o.default_permissions {
        o.default_permissions = true;
        log::info!(
            "allow_other: added default_permissions, so the kernel checks every user's \
             access by the files' owners and modes"
        );
    }
    Ok((o, nonempty))
}

/// Undo the octal escapes of a `/proc/self/mountinfo` field (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The FUSE file system mounted on `mp` in `mountinfo` (`/proc/self/mountinfo`
/// format), as "TYPE SOURCE", if any. Fields: id, parent, dev, root, mountpoint,
/// options, optional fields up to `-`, then type, source, super options.
fn fuse_mounted_on(mountinfo: &str, mp: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    mountinfo.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
        let (ty, source) = (*f.get(sep + 1)?, f.get(sep + 2).copied().unwrap_or(""));
        let on_mp = unescape_mountinfo(f.get(4)?) == mp.as_os_str().as_bytes();
        (on_mp && ty.starts_with("fuse")).then(|| {
            let source = String::from_utf8_lossy(&unescape_mountinfo(source)).into_owned();
            format!("{ty} {source}")
        })
    })
}

/// The canonical mountpoint, refused when it and the store contain each other, when it
/// is already a FUSE mountpoint (stacking hides the first mount, and the next unmount
/// takes away the wrong one) or, without `-o nonempty`, when it has content the mount
/// would hide.
fn check_mountpoint(given: &Path, store: &Path, nonempty: bool) -> Result<PathBuf> {
    // A dead server's mount answers ENOTCONN once the kernel's cached attributes of its
    // root expire, which may happen between any two of the calls below.
    let ended = |what: String| {
        Error::invalid(
            what,
            "a FUSE file system whose server has ended is still mounted there: unmount it \
             first (pbsfs umount)",
        )
    };
    let is_ended = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    let what = format!("mountpoint {}", given.display());
    let mountpoint = match fs::canonicalize(given) {
        Err(e) if is_ended(&e) => return Err(ended(what)),
        r => r.ctx(&what)?,
    };
    let what = format!("mountpoint {}", mountpoint.display());
    match fs::metadata(&mountpoint) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return Err(Error::NotADirectory { what }),
        Err(e) if is_ended(&e) => return Err(ended(what)),
        Err(e) => return Err(Error::io(what, e)),
    }
    // Serving a path through itself would deadlock.
    if mountpoint.starts_with(store) || store.starts_with(&mountpoint) {
        return Err(Error::invalid(
            what,
            format!(
                "it and datastore {} must not contain each other",
                store.display()
            ),
        ));
    }
    let info = fs::read_to_string("/proc/self/mountinfo").ctx("/proc/self/mountinfo")?;
    if let Some(fs) = fuse_mounted_on(&info, &mountpoint) {
        // Cached attributes can hide a dead server from a stat; listing asks it.
        let dead =
            fs::read_dir(&mountpoint).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
        let state = if dead { " whose server has ended" } else { "" };
        return Err(Error::invalid(
            what,
            format!(
                "already the mountpoint of a FUSE file system ({fs}){state}; unmount it first \
                 (pbsfs umount) or choose another folder"
            ),
        ));
    }
    let has_content = fs::read_dir(&mountpoint).ctx(&what)?.next().is_some();
    if has_content && !nonempty {
        return Err(Error::invalid(
            what,
            "not empty: the mount would hide its content; choose an empty folder, or pass \
             -o nonempty",
        ));
    }
    Ok(mountpoint)
}

fn prepare(args: &MountArgs, pbs: Option<&str>) -> Result<Prepared> {
    let ds = super::open_store(&args.store, pbs)?;
    let fsname = format!("pbsfs:{}", ds.root().display());
    let (mut mount, nonempty) = parse_options(&args.options, fsname)?;
    // A store that may not be written (read-only medium, maintenance mode, S3) is
    // mounted read-only by itself, for the kernel too.
    if let (Some(r), false) = (ds.access().no_writes, mount.read_only) {
        log::info!("mounting read-only: {r}");
        mount.read_only = true;
    }
    let mountpoint = check_mountpoint(&args.mountpoint, ds.root(), nonempty)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    if !ns.is_root() && !ds.fs().is_dir(&ds.ns_path(&ns)) {
        return Err(Error::not_found(format!("namespace '{ns}'")));
    }
    let vfs = Options {
        read_only: mount.read_only,
        cache_size: args.cache_size.unwrap_or(DEFAULT_CACHE_SIZE),
        ns,
    };
    Ok(Prepared {
        ds,
        mountpoint,
        mount,
        vfs,
    })
}

pub fn run(args: &MountArgs, pbs: Option<&str>) -> Result<i32> {
    let ready = match args.ready_fd {
        Some(fd) => {
            // Detach from the caller's session; errors only mean we already lead one.
            let _ = sys::setsid();
            Some(
                fs::OpenOptions::new()
                    .write(true)
                    .open(format!("/proc/self/fd/{fd}"))
                    .ctx(format!("readiness descriptor {fd}"))?,
            )
        }
        None => None,
    };
    let prepared = prepare(args, pbs);
    if !args.foreground {
        return background(args, pbs, &prepared?);
    }
    let res = prepared.and_then(|p| serve(p, ready, args.ready_fd));
    if let (Err(e), Some(fd)) = (&res, args.ready_fd) {
        if let Ok(mut f) = fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
        {
            let _ = writeln!(f, "error: {e}");
        }
    }
    res
}

/// The foreground mount: serve until unmounted; SIGINT/SIGTERM unmount, SIGUSR1 logs
/// the statistics (as unmounting does).
fn serve(p: Prepared, ready: Option<fs::File>, ready_fd: Option<i32>) -> Result<i32> {
    // SIGUSR1 logs the statistics; SIGUSR2 is the session thread saying it ended.
    const SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2];
    // Before any thread exists, so every thread inherits the mask, and no thread has
    // made an arena of its own yet.
    sys::block_signals(&SIGNALS).ctx("block signals")?;
    let malloc = sys::bound_malloc(MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD);
    if let Err(e) = malloc {
        log::warn!("{e}: the mount may keep more freed memory");
    }
    let store = p.ds.root().display().to_string();
    let vfs = Vfs::new(p.ds, p.vfs)?;
    let mut session = fuse::mount(vfs, &p.mountpoint, &p.mount, || {
        let _ = sys::signal_self(libc::SIGUSR2);
    })?;
    // The mount answers once a stat through it works.
    if let Err(e) = fs::metadata(&p.mountpoint).ctx(format!("mounted {}", p.mountpoint.display())) {
        if session.unmount().is_err() {
            lazy_unmount(&p.mountpoint);
        }
        let _ = session.join();
        return Err(e);
    }
    log::info!(
        "serving {store} on {}{}",
        p.mountpoint.display(),
        if p.mount.read_only {
            " (read-only)"
        } else {
            ""
        }
    );
    if let (Some(mut f), Some(fd)) = (ready, ready_fd) {
        let _ = writeln!(f, "{READY}");
        drop(f);
        sys::redirect_to_null(fd).ctx("detach from the readiness pipe")?;
    }
    let mut unmounting = false;
    loop {
        match sys::wait_signal(&SIGNALS).ctx("wait for signals")? {
            libc::SIGUSR2 => break,
            libc::SIGUSR1 => log::info!("{}", session.stats.summary()),
            sig => {
                log::info!("signal {sig}: unmounting {}", p.mountpoint.display());
                let res = if unmounting {
                    Err(Error::other("unmount", "a second signal"))
                } else {
                    session.unmount()
                };
                if let Err(e) = res {
                    log::warn!("{e}; detaching lazily");
                    lazy_unmount(&p.mountpoint);
                }
                unmounting = true;
            }
        }
    }
    session.join()?;
    log::info!("unmounted {}", p.mountpoint.display());
    Ok(exit::OK)
}

fn lazy_unmount(mp: &Path) {
    let ok = Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(mp)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(mp).status();
    }
}

/// Start the serving process and wait for its readiness line.
fn background(args: &MountArgs, pbs: Option<&str>, p: &Prepared) -> Result<i32> {
    let exe = std::env::current_exe().ctx("the pbsfs executable")?;
    let mut cmd = Command::new(exe);
    // argv[0] `pbsfs`, not the path run: a copy installed as /sbin/mount.fuse.pbsfs
    // would otherwise parse the child's arguments in mount(8)'s convention.
    cmd.arg0("pbsfs");
    if let Some(name) = pbs {
        cmd.arg("--pbs-store").arg(name);
    }
    cmd.arg("mount").arg(p.ds.root()).arg(&p.mountpoint);
    if !args.options.is_empty() {
        cmd.arg("-o").arg(args.options.join(","));
    }
    if let Some(c) = args.cache_size {
        cmd.arg("--cache-size").arg(c.to_string());
    }
    if let Some(ns) = &args.ns {
        cmd.arg("--ns").arg(ns);
    }
    // The server's stderr is detached: its lines go to syslog when a daemon listens,
    // else to a file named here, where the user still sees it.
    let log_file = match &args.log_file {
        Some(f) => Some(std::path::absolute(f).ctx(f.display())?),
        None if crate::logging::syslog_available() => None,
        None => {
            let f = crate::logging::default_log_file(&p.mountpoint);
            eprintln!(
                "pbsfs: no log daemon listens on {}: the mount logs to {}",
                crate::logging::socket_path().display(),
                f.display()
            );
            Some(f)
        }
    };
    if let Some(f) = log_file {
        // Opened here first, so a file that cannot be written fails the mount, named.
        crate::logging::open_log_file(&f)?;
        cmd.arg("--log-file").arg(f);
    }
    cmd.args(["--foreground", "--ready-fd", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().ctx("start the mount process")?;
    let out = child.stdout.take().expect("piped stdout");
    let mut failure = None;
    for line in BufReader::new(out).lines() {
        let line = line.ctx("read the mount process's status")?;
        if line == READY {
            return Ok(exit::OK);
        }
        if let Some(msg) = line.strip_prefix("error: ") {
            failure = Some(msg.to_string());
        }
    }
    let status = child.wait().ctx("wait for the mount process")?;
    Err(Error::other(
        failure.unwrap_or_else(|| format!("the mount process ended ({status})")),
        format!("mounting {} failed", p.mountpoint.display()),
    ))
}

/// Unmount a pbsfs mount (also one whose server was killed).
pub fn umount(mountpoint: &Path) -> Result<i32> {
    let mut errors = Vec::new();
    for (prog, args) in [("fusermount3", &["-u", "--"][..]), ("umount", &[][..])] {
        match Command::new(prog).args(args).arg(mountpoint).output() {
            Ok(o) if o.status.success() => return Ok(exit::OK),
            Ok(o) => errors.push(format!(
                "{prog}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => errors.push(format!("{prog}: {e}")),
        }
    }
    Err(Error::other(
        format!("unmount {}", mountpoint.display()),
        errors.join("; "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let (o, nonempty) = parse_options(
            &[
                "ro".into(),
                "allow_other".into(),
                "fsname=x".into(),
                "noatime".into(),
            ],
            "d".into(),
        )
        .unwrap();
        assert!(o.read_only && o.allow_other && o.fsname == "x" && o.flags == ["noatime"]);
        assert!(!nonempty);
        assert!(parse_options(&["bogus".into()], "d".into()).is_err());
        assert!(parse_options(&["auto_unmount".into()], "d".into()).is_err());
    }

    #[test]
    fn allow_other_always_comes_with_permission_checks() {
        let (o, _) = parse_options(&["allow_other".into()], "d".into()).unwrap();
        assert!(o.allow_other && o.default_permissions);
        let (o, _) = parse_options(&["allow_root".into()], "d".into()).unwrap();
        assert!(!o.default_permissions, "only allow_other adds it");
    }

    #[test]
    fn nonempty_is_pbsfs_own_and_never_reaches_the_kernel() {
        let (o, nonempty) = parse_options(&["nonempty".into(), "ro".into()], "d".into()).unwrap();
        assert!(nonempty && o.read_only);
        assert!(o.flags.is_empty(), "{:?}", o.flags);
    }

    #[test]
    fn fuse_mountpoints_are_found_in_mountinfo() {
        let info = "\
22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
97 29 0:48 / /var/tmp/a\\040b rw,nosuid,nodev shared:50 - fuse.pbsfs pbsfs:/srv/st\\040x rw
98 29 0:49 / /mnt/t rw master:1 shared:2 - tmpfs tmpfs rw
99 29 0:50 / /mnt/f rw - fuse sshfs rw
";
        assert_eq!(
            fuse_mounted_on(info, Path::new("/var/tmp/a b")).as_deref(),
            Some("fuse.pbsfs pbsfs:/srv/st x")
        );
        assert_eq!(
            fuse_mounted_on(info, Path::new("/mnt/f")).as_deref(),
            Some("fuse sshfs")
        );
        assert_eq!(fuse_mounted_on(info, Path::new("/mnt/t")), None, "not FUSE");
        assert_eq!(fuse_mounted_on(info, Path::new("/var/tmp/a")), None);
        assert_eq!(fuse_mounted_on(info, Path::new("/proc")), None);
        assert_eq!(unescape_mountinfo("a\\134b\\011"), b"a\\b\t");
    }
}
