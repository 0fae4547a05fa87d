//! Names and paths of namespaces, backup groups and snapshots (spec §1.3-§1.5), each
//! validated by the spec's rules so no name can leave the datastore (no `..`, no `/`).

use std::fmt;
use std::path::PathBuf;

use crate::util::error::{Error, Result};
use crate::util::time;

const MAX_NAMESPACE_DEPTH: usize = 7;
/// PBS's `MAX_BACKUP_NAMESPACE_LENGTH`. PBS counts every component with one separator
/// (`len + component_len + 1 > 256` is refused), so the names joined by `/` are at most
/// 255 bytes, and one component too (spec §1.3).
const MAX_NAMESPACE_LENGTH: usize = 256;

/// The earliest time a new snapshot may have: PBS's `BACKUP_TIME_SCHEMA` minimum (spec
/// §4.2, §11.9); PBS refuses 0 and negative backup times.
pub const MIN_BACKUP_TIME: i64 = 1;

/// `[A-Za-z0-9_][A-Za-z0-9._\-]*`: namespace components and backup ids.
pub fn is_safe_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A namespace: `a/b/c` lives at `ns/a/ns/b/ns/c`. The root namespace is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupNamespace(Vec<String>);

impl BackupNamespace {
    pub fn root() -> BackupNamespace {
        BackupNamespace(Vec::new())
    }

    /// Parse `a/b` (empty or `/` is the root).
    pub fn parse(s: &str) -> Result<BackupNamespace> {
        let s = s.trim_matches('/');
        if s.is_empty() {
            return Ok(BackupNamespace::root());
        }
        let mut ns = BackupNamespace::root();
        for c in s.split('/') {
            ns = ns.child(c)?;
        }
        Ok(ns)
    }

    /// This namespace with one more component.
    pub fn child(&self, name: &str) -> Result<BackupNamespace> {
        if !is_safe_id(name) {
            return Err(Error::invalid(
                format!("'{name}'"),
                "not a valid namespace name",
            ));
        }
        // PBS's length as it counts it: every component plus one separator.
        let len: usize = self.0.iter().map(|c| c.len() + 1).sum();
        if len + name.len() + 1 > MAX_NAMESPACE_LENGTH {
            let why = if self.0.is_empty() {
                format!(
                    "a namespace name is at most {} bytes (this one has {})",
                    MAX_NAMESPACE_LENGTH - 1,
                    name.len()
                )
            } else {
                format!(
                    "a namespace path is at most {} bytes with its '/' separators",
                    MAX_NAMESPACE_LENGTH - 1
                )
            };
            let full = match self.0.is_empty() {
                true => name.to_string(),
                false => format!("{}/{name}", self.0.join("/")),
            };
            return Err(Error::invalid(format!("namespace '{full}'"), why));
        }
        let mut v = self.0.clone();
        v.push(name.to_string());
        if v.len() > MAX_NAMESPACE_DEPTH {
            return Err(Error::invalid(
                format!("namespace '{}'", v.join("/")),
                format!("deeper than {MAX_NAMESPACE_DEPTH} levels"),
            ));
        }
        Ok(BackupNamespace(v))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// Path relative to the datastore root: `ns/a/ns/b` (empty for the root).
    pub fn rel_path(&self) -> PathBuf {
        let mut p = PathBuf::new();
        for c in &self.0 {
            p.push("ns");
            p.push(c);
        }
        p
    }
}

impl fmt::Display for BackupNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackupType {
    Vm,
    Ct,
    Host,
}

impl BackupType {
    pub const ALL: [BackupType; 3] = [BackupType::Vm, BackupType::Ct, BackupType::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Vm => "vm",
            BackupType::Ct => "ct",
            BackupType::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Result<BackupType> {
        match s {
            "vm" => Ok(BackupType::Vm),
            "ct" => Ok(BackupType::Ct),
            "host" => Ok(BackupType::Host),
            _ => Err(Error::invalid(
                format!("'{s}'"),
                "not a backup type (vm, ct or host)",
            )),
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup group `<type>/<id>` in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupGroup {
    pub ns: BackupNamespace,
    pub ty: BackupType,
    pub id: String,
}

impl BackupGroup {
    pub fn new(ns: BackupNamespace, ty: BackupType, id: &str) -> Result<BackupGroup> {
        if !is_safe_id(id) {
            return Err(Error::invalid(format!("'{id}'"), "not a valid backup id"));
        }
        Ok(BackupGroup {
            ns,
            ty,
            id: id.to_string(),
        })
    }

    /// Parse `TYPE/ID`.
    pub fn parse(ns: &BackupNamespace, s: &str) -> Result<BackupGroup> {
        let (ty, id) = s
            .split_once('/')
            .ok_or_else(|| Error::invalid(format!("'{s}'"), "not a group: use TYPE/ID"))?;
        BackupGroup::new(ns.clone(), BackupType::parse(ty)?, id)
    }

    /// `<type>/<id>` without the namespace.
    pub fn name(&self) -> String {
        format!("{}/{}", self.ty, self.id)
    }

    pub fn rel_path(&self) -> PathBuf {
        self.ns.rel_path().join(self.ty.as_str()).join(&self.id)
    }
}

impl fmt::Display for BackupGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rel_path().display())
    }
}

/// A snapshot `<type>/<id>/<time>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupDir {
    pub group: BackupGroup,
    pub time: i64,
}

impl BackupDir {
    pub fn new(group: BackupGroup, time: i64) -> Result<BackupDir> {
        if time::format_utc(time).is_none() {
            return Err(Error::invalid(
                format!("backup time {time}"),
                "outside the years 0..9999",
            ));
        }
        Ok(BackupDir { group, time })
    }

    /// The folder of a snapshot about to be written: also PBS's rule that a backup time
    /// is at least 1 (spec §11.9). Existing folders go through `new`, so a store that
    /// already holds `1970-01-01T00:00:00Z` still lists.
    pub fn for_new_backup(group: BackupGroup, time: i64) -> Result<BackupDir> {
        if time < MIN_BACKUP_TIME {
            return Err(Error::invalid(
                format!(
                    "backup time {time} ({})",
                    time::format_utc(time).unwrap_or_else(|| "out of range".into())
                ),
                "PBS requires a backup time of at least 1 (1970-01-01T00:00:01Z)",
            ));
        }
        BackupDir::new(group, time)
    }

    /// PBS's worker id for a task on this snapshot (verify), in store `store`.
    pub fn worker_id(&self, store: &str) -> String {
        crate::util::upid::snapshot_worker_id(
            store,
            self.group.ns.components(),
            self.group.ty.as_str(),
            &self.group.id,
            self.time,
        )
    }

    /// Parse `TYPE/ID/YYYY-MM-DDTHH:MM:SSZ`.
    pub fn parse(ns: &BackupNamespace, s: &str) -> Result<BackupDir> {
        let (g, t) = s
            .rsplit_once('/')
            .ok_or_else(|| Error::invalid(format!("'{s}'"), "not a snapshot: use TYPE/ID/TIME"))?;
        let group = BackupGroup::parse(ns, g)?;
        let time = time::parse_snapshot_time(t).ok_or_else(|| {
            Error::invalid(
                format!("'{t}'"),
                "not a snapshot time (YYYY-MM-DDTHH:MM:SSZ)",
            )
        })?;
        BackupDir::new(group, time)
    }

    /// The folder name: `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn time_string(&self) -> String {
        time::format_utc(self.time).expect("validated at construction")
    }

    /// `<type>/<id>/<time>` without the namespace.
    pub fn name(&self) -> String {
        format!("{}/{}", self.group.name(), self.time_string())
    }

    pub fn rel_path(&self) -> PathBuf {
        self.group.rel_path().join(self.time_string())
    }
}

impl fmt::Display for BackupDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rel_path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(is_safe_id("100") && is_safe_id("my-host.lan") && is_safe_id("_x"));
        for bad in ["", "..", ".x", "-x", "a/b", "a b", "ä"] {
            assert!(!is_safe_id(bad), "{bad}");
        }
        assert!(BackupNamespace::parse("a/../b").is_err());
        assert!(BackupNamespace::parse("1/2/3/4/5/6/7").is_ok());
        assert!(BackupNamespace::parse("1/2/3/4/5/6/7/8").is_err());
        assert!(BackupGroup::parse(&BackupNamespace::root(), "vm/..").is_err());
        assert!(BackupGroup::parse(&BackupNamespace::root(), "xx/100").is_err());
    }

    #[test]
    fn namespace_lengths_are_pbs_ones() {
        // One component: at most 255 bytes (PBS: 0 + len + 1 > 256 is refused).
        let ok = "a".repeat(255);
        assert_eq!(
            BackupNamespace::parse(&ok).unwrap().components(),
            [ok.as_str()]
        );
        let long = "a".repeat(256);
        let e = BackupNamespace::parse(&long).unwrap_err();
        assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
        assert!(e.to_string().contains("at most 255 bytes"), "{e}");
        assert!(e.to_string().contains(&long), "names the namespace: {e}");
        // The whole path: components joined by '/' at most 255 bytes.
        let a = "a".repeat(127);
        let b = "b".repeat(127);
        assert!(
            BackupNamespace::parse(&format!("{a}/{b}")).is_ok(),
            "255 bytes"
        );
        let b = "b".repeat(128);
        let e = BackupNamespace::parse(&format!("{a}/{b}")).unwrap_err();
        assert!(e.to_string().contains(&format!("'{a}/{b}'")), "{e}");
        assert!(BackupNamespace::root().child(&"x".repeat(256)).is_err());
    }

    #[test]
    fn a_new_backup_needs_a_time_of_at_least_one() {
        let g = BackupGroup::parse(&BackupNamespace::root(), "vm/100").unwrap();
        for bad in [0, -1, -86_400] {
            let e = BackupDir::for_new_backup(g.clone(), bad).unwrap_err();
            assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
        assert_eq!(BackupDir::for_new_backup(g.clone(), 1).unwrap().time, 1);
        // Existing folders still parse and list, whatever their time.
        let d = BackupDir::parse(&BackupNamespace::root(), "vm/100/1970-01-01T00:00:00Z");
        assert_eq!(d.unwrap().time, 0);
    }

    #[test]
    fn paths() {
        let ns = BackupNamespace::parse("a/b").unwrap();
        assert_eq!(ns.rel_path(), PathBuf::from("ns/a/ns/b"));
        let d = BackupDir::parse(&ns, "vm/100/2024-05-02T08:11:33Z").unwrap();
        assert_eq!(
            d.rel_path(),
            PathBuf::from("ns/a/ns/b/vm/100/2024-05-02T08:11:33Z")
        );
        assert_eq!(d.name(), "vm/100/2024-05-02T08:11:33Z");
        assert_eq!(d.to_string(), "ns/a/ns/b/vm/100/2024-05-02T08:11:33Z");
        assert!(BackupDir::parse(&ns, "vm/100/2024-05-02").is_err());
    }
}
