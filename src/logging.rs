//! Where log lines go: stderr for commands and foreground mounts; for the serving
//! process of a background mount, whose stderr is detached, syslog (`/dev/log`, facility
//! daemon) when a log daemon listens there, else a file the mount names when it starts,
//! so its EIO reports (with the bad chunk's digest) and failed commits reach someone.
//! `--log-file` chooses the file for any mount. `RUST_LOG` sets the level of every
//! command.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::util::error::{IoContext, Result};

/// The syslog socket; `PBSFS_SYSLOG_SOCKET` points elsewhere (tests).
pub fn socket_path() -> PathBuf {
    std::env::var_os("PBSFS_SYSLOG_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/log"))
}

/// Sends each complete line written to it as one syslog datagram.
struct Syslog {
    sock: UnixDatagram,
    path: PathBuf,
    line: Vec<u8>,
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|b| *b == b'\n') {
            let msg: Vec<u8> = self.line.drain(..=end).take(end).collect();
            // A full or absent log daemon must never stall or fail the filesystem.
            let _ = self.sock.send_to(&msg, &self.path);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Syslog severity of a log level (RFC 5424), with facility daemon (3).
fn priority(level: log::Level) -> u8 {
    let severity = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    3 * 8 + severity
}

/// Where a process's log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    /// The syslog socket (a background mount's server, chosen when one listens).
    Syslog,
    /// Appended to this file.
    File(PathBuf),
}

/// Whether a log daemon listens on the syslog socket now (a datagram socket nobody
/// bound refuses the connection, so lines sent there would be lost).
pub fn syslog_available() -> bool {
    UnixDatagram::unbound()
        .and_then(|s| s.connect(socket_path()))
        .is_ok()
}

/// The file a background mount on `mountpoint` logs to when no syslog socket listens:
/// `/var/log/pbsfs/` for root, else `$XDG_STATE_HOME/pbsfs/` (`~/.local/state/pbsfs/`),
/// named after the mount point (`/mnt/backups` -> `mnt-backups.log`, `/` -> `-.log`).
pub fn default_log_file(mountpoint: &Path) -> PathBuf {
    let dir = if crate::util::sys::geteuid() == 0 {
        PathBuf::from("/var/log/pbsfs")
    } else if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("pbsfs")
    } else if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        PathBuf::from(h).join(".local/state/pbsfs")
    } else {
        std::env::temp_dir().join(format!("pbsfs-{}", crate::util::sys::geteuid()))
    };
    let name: Vec<String> = mountpoint
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let name = if name.is_empty() {
        "-".to_string()
    } else {
        name.join("-")
    };
    dir.join(format!("{name}.log"))
}

/// Open (create, append) a log file, creating its folder; an error names the file.
pub fn open_log_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).ctx(dir.display())?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .ctx(format!("log file {}", path.display()))
}

/// The default level and the target of a command's log lines: a serving mount logs at
/// info to its `--log-file`, else to syslog when its stderr is detached (a background
/// mount's server, started with a readiness descriptor), else to stderr; every other
/// command logs warnings to stderr.
pub fn target_of(cmd: &crate::cli::Command) -> (&'static str, Target) {
    match cmd {
        crate::cli::Command::Mount(m) if m.foreground => {
            let target = match (&m.log_file, m.ready_fd) {
                (Some(f), _) => Target::File(f.clone()),
                (None, Some(_)) => Target::Syslog,
                (None, None) => Target::Stderr,
            };
            // fuser's session warns that its own unmount failed after every `umount`
            // from outside (the kernel already let go: EINVAL), a false alarm.
            ("info,fuser::session=error", target)
        }
        _ => ("warn", Target::Stderr),
    }
}

/// Set up logging. `RUST_LOG` overrides `default_level`. Syslog falls back to stderr
/// when no socket can be made; a log file that cannot be opened is an error.
pub fn init(default_level: &str, target: &Target) -> Result<()> {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    b.format_timestamp_millis();
    if let Target::File(path) = target {
        b.target(env_logger::Target::Pipe(Box::new(open_log_file(path)?)));
    }
    if *target == Target::Syslog {
        if let Ok(sock) = UnixDatagram::unbound() {
            let pid = std::process::id();
            b.format(move |buf, record| {
                writeln!(
                    buf,
                    "<{}>pbsfs[{pid}]: {}",
                    priority(record.level()),
                    record.args()
                )
            });
            b.target(env_logger::Target::Pipe(Box::new(Syslog {
                sock,
                path: socket_path(),
                line: Vec::new(),
            })));
        }
    }
    let _ = b.try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_datagram_per_line_with_priority() {
        let dir = std::env::temp_dir().join(format!("pbsfs-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut w = Syslog {
            sock: UnixDatagram::unbound().unwrap(),
            path: path.clone(),
            line: Vec::new(),
        };
        w.write_all(
            format!(
                "<{}>pbsfs[1]: first\n<27>pbsfs[1]: sec",
                priority(log::Level::Warn)
            )
            .as_bytes(),
        )
        .unwrap();
        w.write_all(b"ond\n").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<28>pbsfs[1]: first");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<27>pbsfs[1]: second");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
