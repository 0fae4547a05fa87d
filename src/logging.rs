//! Where log lines go: stderr for commands and foreground mounts; syslog (`/dev/log`,
//! facility daemon) for the serving process of a background mount, whose stderr is
//! detached, so its EIO reports and failed commits reach the journal.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// The syslog socket; `PBSFS_SYSLOG_SOCKET` points elsewhere (tests).
fn socket_path() -> PathBuf {
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

/// Set up logging. `RUST_LOG` overrides `default_level`. With `to_syslog`, lines go to
/// syslog when its socket can be opened, else to stderr.
pub fn init(default_level: &str, to_syslog: bool) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    b.format_timestamp_millis();
    if to_syslog {
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
