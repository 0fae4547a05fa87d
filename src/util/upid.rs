//! UPID task ids (spec §11.1), as PBS writes them into `verify_state` and `.gc-status`:
//! `UPID:node:PID:PSTART:TASKID:STARTTIME:type:worker_id:authid:`.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::util::error::{Error, Result};

/// Worker type of a state typed by hand through the mount (`ok`/`failed`): never trusted
/// to skip a check (spec §11.5).
pub const PBSFS_EDIT: &str = "pbsfs-edit";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub task_id: u64,
    pub starttime: i64,
    pub worker_type: String,
    pub worker_id: String,
    pub authid: String,
}

/// systemd unit-name escaping in path mode (spec §5.3): leading `/` stripped, then as
/// `systemd_escape`.
pub fn systemd_escape_path(path: &str) -> String {
    systemd_escape(path.trim_start_matches('/'))
}

/// systemd unit-name escaping: `/` to `-`, `[A-Za-z0-9_.]` kept (a `.` not as the first
/// byte), every other byte `\xNN`. PBS uses it for lock names and task worker ids.
fn systemd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i > 0 => out.push('.'),
            b if b.is_ascii_alphanumeric() || b == b'_' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// PBS's worker id of a snapshot task (spec §11.1): `{store}:{ns path}/{type}/{id}/{TIME
/// as %08X}`, the namespace shown as its path on disk (`ns/a/ns/b`), empty for the root:
/// `store:/vm/100/65A1B2C3`, `store:ns/a/ns/b/vm/100/65A1B2C3`. Upid::new escapes it.
pub fn snapshot_worker_id(store: &str, ns: &[String], ty: &str, id: &str, time: i64) -> String {
    let ns_path: Vec<String> = ns.iter().map(|c| format!("ns/{c}")).collect();
    format!("{store}:{}/{ty}/{id}/{time:08X}", ns_path.join("/"))
}

/// Undo `systemd_escape` as PBS's `unescape_unit` does while it parses a UPID (spec
/// §11.1): `-` is `/`, `\xNN` one byte, and the result must be UTF-8. `Err` says why PBS
/// would refuse the string: a `\` not followed by `x` and two hex digits, or bytes that
/// are not UTF-8 once unescaped.
fn systemd_unescape(s: &str) -> std::result::Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let digit = |k: usize| b.get(i + k).and_then(|c| char::from(*c).to_digit(16));
                match (b.get(i + 1), digit(2), digit(3)) {
                    (Some(b'x'), Some(hi), Some(lo)) => out.push((hi << 4 | lo) as u8),
                    _ => return Err("malformed \\xNN escape"),
                }
                i += 4;
            }
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).or(Err("not UTF-8 once unescaped"))
}

static TASK_COUNTER: AtomicU32 = AtomicU32::new(0);

fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn hex_field(s: &str, min: usize, max: usize, what: &str) -> Result<u64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            format!("UPID {what} '{s}'"),
            format!("not {min}-{max} hex digits"),
        ));
    }
    u64::from_str_radix(s, 16)
        .map_err(|_| Error::invalid(format!("UPID {what} '{s}'"), "overflows"))
}

/// This machine's node name: the host name up to its first dot.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let node = host.trim().split('.').next().unwrap_or("").to_string();
    if valid_node(&node) {
        node
    } else {
        "localhost".to_string()
    }
}

/// Field 22 of `/proc/self/stat`: the process start time in clock ticks.
fn process_start() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may contain spaces: count fields after its ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Upid {
    /// A new task id of this process, started now.
    pub fn new(worker_type: &str, worker_id: &str, authid: &str) -> Upid {
        Upid {
            node: node_name(),
            pid: std::process::id(),
            pstart: process_start(),
            task_id: TASK_COUNTER.fetch_add(1, Ordering::Relaxed) as u64,
            starttime: crate::util::time::now(),
            worker_type: worker_type.to_string(),
            worker_id: systemd_escape(worker_id),
            authid: authid.to_string(),
        }
    }

    pub fn parse(s: &str) -> Result<Upid> {
        let bad = |why: &str| Error::invalid(format!("UPID '{s}'"), why);
        let body = s
            .strip_prefix("UPID:")
            .and_then(|b| b.strip_suffix(':'))
            .ok_or_else(|| bad("must start with 'UPID:' and end with ':'"))?;
        let f: Vec<&str> = body.split(':').collect();
        if f.len() != 8 {
            return Err(bad(&format!("{} fields instead of 8", f.len())));
        }
        if !valid_node(f[0]) {
            return Err(bad("bad node name"));
        }
        if f[5].is_empty() || f[5].contains(char::is_whitespace) {
            return Err(bad("bad worker type"));
        }
        if f[7].is_empty() || f[7].contains(char::is_whitespace) {
            return Err(bad("bad auth id"));
        }
        if f[6].contains(char::is_whitespace) {
            return Err(bad("bad worker id"));
        }
        // PBS unescapes the worker id while parsing and fails where this fails (spec
        // §11.1): such a verify state is unparsable to PBS, so it must be to pbsfs too.
        if let Err(why) = systemd_unescape(f[6]) {
            return Err(bad(&format!("worker id: {why}")));
        }
        Ok(Upid {
            node: f[0].to_string(),
            pid: hex_field(f[1], 8, 8, "pid")? as u32,
            pstart: hex_field(f[2], 8, 9, "pstart")?,
            task_id: hex_field(f[3], 8, 16, "task id")?,
            starttime: hex_field(f[4], 8, 8, "starttime")? as i64,
            worker_type: f[5].to_string(),
            worker_id: f[6].to_string(),
            authid: f[7].to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node,
            self.pid,
            self.pstart,
            self.task_id,
            self.starttime,
            self.worker_type,
            self.worker_id,
            self.authid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let u = Upid::new("verify_snapshot", "store1:vm/100/6633CBB5", "root@pam");
        let s = u.to_string();
        assert!(s.starts_with("UPID:") && s.ends_with(":root@pam:"), "{s}");
        assert_eq!(Upid::parse(&s).unwrap(), u);
        let real = "UPID:pbs:000004D2:00ABCDEF:00000001:6633CBB5:verificationjob:store1\\x3av\\x2dabc:root@pam:";
        let p = Upid::parse(real).unwrap();
        assert_eq!(p.starttime, 0x6633CBB5);
        assert_eq!(p.worker_type, "verificationjob");
        for bad in [
            "",
            "UPID:pbs:1:2:3:4:t:w:a:",
            "UPID:-x:000004D2:00ABCDEF:00000001:6633CBB5:t::a:",
            "garbage",
        ] {
            assert!(Upid::parse(bad).is_err(), "{bad}");
        }
        assert!(Upid::parse("UPID:pbs:000004D2:00ABCDEF:00000001:6633CBB5:t::a:").is_ok());
    }

    #[test]
    fn worker_ids_must_unescape_as_pbs_unescapes_them() {
        let upid = |wid: &str| format!("UPID:pbs:000004D2:00ABCDEF:00000001:6633CBB5:t:{wid}:a:");
        for good in ["", "s1\\x3a-vm-100-6633CBB5", "a\\x2Db", "\\xc3\\xa4", "x-"] {
            let p = Upid::parse(&upid(good));
            assert_eq!(p.unwrap().worker_id, good, "kept escaped, as PBS writes it");
        }
        for bad in [
            "\\", "a\\", "a\\x", "a\\x3", "a\\x3g", "a\\y3a", "a\\X3a", "\\\\x3a", "\\xff",
        ] {
            let e = Upid::parse(&upid(bad)).unwrap_err();
            assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("worker id"), "{bad}: {e}");
        }
        assert_eq!(systemd_unescape("s1\\x3a-ct-7").unwrap(), "s1:/ct/7");
        // Whatever pbsfs escapes, PBS (and so pbsfs) can parse back.
        for id in ["store:/vm/100/65A1B2C3", "ä-b c\\.x", ".hidden", ""] {
            assert_eq!(systemd_unescape(&systemd_escape(id)).unwrap(), id, "{id}");
            let u = Upid::new("verify", id, "root@pam");
            assert_eq!(Upid::parse(&u.to_string()).unwrap(), u, "{id}");
        }
    }

    #[test]
    fn snapshot_worker_ids_are_pbs_ones() {
        let t = 0x65A1B2C3;
        assert_eq!(
            snapshot_worker_id("store", &[], "vm", "100", t),
            "store:/vm/100/65A1B2C3"
        );
        let ns = ["a".to_string(), "b".to_string()];
        assert_eq!(
            snapshot_worker_id("store", &ns, "vm", "100", t),
            "store:ns/a/ns/b/vm/100/65A1B2C3"
        );
        // As PBS stores it: systemd-escaped inside the UPID.
        let u = Upid::new(
            "verify_snapshot",
            &snapshot_worker_id("s1", &[], "ct", "7", t),
            "root@pam",
        );
        assert_eq!(u.worker_id, "s1\\x3a-ct-7-65A1B2C3");
    }
}
