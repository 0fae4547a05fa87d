//! `pbsfs mount` and `pbsfs umount`. A foreground mount serves until unmounted or sent
//! SIGINT/SIGTERM (then it unmounts itself). A background mount re-executes this binary
//! with `--foreground --ready-fd 1` in a new session (a threaded process cannot fork
//! safely) and returns once that child reports the mount answers, or prints the child's
//! error and fails. The child logs to syslog (see `logging.rs`); `--foreground` logs to
//! stderr. `RUST_LOG` sets the level of both.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::MountArgs;
use crate::fuse::{self, MountOpts};
use crate::store::Datastore;
use crate::util::error::{exit, Error, IoContext, Result};
use crate::util::sys;
use crate::vfs::{Options, Vfs};

/// Verified chunks kept in memory by default.
const DEFAULT_CACHE_SIZE: u64 = 256 << 20;
const READY: &str = "ready";

/// Everything checked before mounting, in both the parent and the serving process.
struct Prepared {
    ds: Datastore,
    mountpoint: PathBuf,
    mount: MountOpts,
    vfs: Options,
}

fn parse_options(list: &[String], fsname: String) -> Result<MountOpts> {
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
                         default_permissions, auto_unmount, fsname=, subtype=, dev, nodev, suid, \
                         nosuid, exec, noexec, atime, noatime, sync, async, dirsync)",
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
    Ok(o)
}

fn prepare(args: &MountArgs, pbs: Option<&str>) -> Result<Prepared> {
    let ds = super::open_store(&args.store, pbs)?;
    let mountpoint = fs::canonicalize(&args.mountpoint)
        .ctx(format!("mountpoint {}", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        return Err(Error::NotADirectory {
            what: format!("mountpoint {}", mountpoint.display()),
        });
    }
    // Serving a path through itself would deadlock.
    if mountpoint.starts_with(ds.root()) || ds.root().starts_with(&mountpoint) {
        return Err(Error::invalid(
            format!("mountpoint {}", mountpoint.display()),
            format!(
                "it and datastore {} must not contain each other",
                ds.root().display()
            ),
        ));
    }
    let ns = super::parse_ns(args.ns.as_deref())?;
    if !ns.is_root() && !ds.ns_path(&ns).is_dir() {
        return Err(Error::not_found(format!("namespace '{ns}'")));
    }
    let mount = parse_options(&args.options, format!("pbsfs:{}", ds.root().display()))?;
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

/// The foreground mount: serve until unmounted; SIGINT/SIGTERM unmount.
fn serve(p: Prepared, ready: Option<fs::File>, ready_fd: Option<i32>) -> Result<i32> {
    const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1];
    // Before any thread exists, so every thread inherits the mask.
    sys::block_signals(&SIGNALS).ctx("block signals")?;
    let store = p.ds.root().display().to_string();
    let vfs = Vfs::new(p.ds, p.vfs)?;
    let mut session = fuse::mount(vfs, &p.mountpoint, &p.mount, || {
        let _ = sys::signal_self(libc::SIGUSR1);
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
            libc::SIGUSR1 => break,
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
        let o = parse_options(
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
        assert!(parse_options(&["bogus".into()], "d".into()).is_err());
        assert!(parse_options(&["auto_unmount".into()], "d".into()).is_err());
    }
}
