//! What pbsfs reads of a PBS installation: `datastore.cfg` (is this folder a configured
//! store, under which name, is it S3-backed or in maintenance mode) and the `backup`
//! user. `PBSFS_PBS_CONFIG_DIR` / `PBSFS_PBS_RUN_DIR` point elsewhere for tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store::files::Owner;
use crate::util::error::{Error, Result};

fn config_dir() -> PathBuf {
    std::env::var_os("PBSFS_PBS_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/proxmox-backup"))
}

pub fn run_dir() -> PathBuf {
    std::env::var_os("PBSFS_PBS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/proxmox-backup"))
}

/// One `datastore:` section of `datastore.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub name: String,
    pub path: PathBuf,
    /// `maintenance-mode` property string, e.g. `type=read-only,message=...`.
    pub maintenance_mode: Option<String>,
    /// `backend` property string, e.g. `type=s3,client=...`.
    pub backend: Option<String>,
}

impl StoreConfig {
    /// Why pbsfs must not write to this store, if it must not (spec §5.5).
    pub fn write_refusal(&self) -> Option<String> {
        if let Some(b) = &self.backend {
            if property(b, "type").as_deref() == Some("s3") {
                return Some(format!(
                    "datastore '{}' is S3-backed: local edits would not reach the bucket",
                    self.name
                ));
            }
        }
        if let Some(m) = &self.maintenance_mode {
            let ty = property(m, "type").unwrap_or_default();
            if !ty.is_empty() {
                let msg = property(m, "message")
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                return Some(format!(
                    "datastore '{}' is in maintenance mode {ty}{msg}",
                    self.name
                ));
            }
        }
        None
    }
}

/// A value of a property string `k=v,k2=v2` (the first key may be implicit: `type`).
fn property(s: &str, key: &str) -> Option<String> {
    for (i, part) in s.split(',').enumerate() {
        match part.split_once('=') {
            Some((k, v)) if k.trim() == key => return Some(v.trim().to_string()),
            None if i == 0 && key == "type" => return Some(part.trim().to_string()),
            _ => {}
        }
    }
    None
}

/// Parse `datastore.cfg`'s `datastore:` sections.
fn parse_datastore_cfg(text: &str) -> Vec<StoreConfig> {
    let mut out: Vec<StoreConfig> = Vec::new();
    let mut in_store = false;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            in_store = false;
            if let Some((ty, name)) = line.split_once(':') {
                if ty.trim() == "datastore" {
                    in_store = true;
                    out.push(StoreConfig {
                        name: name.trim().to_string(),
                        path: PathBuf::new(),
                        maintenance_mode: None,
                        backend: None,
                    });
                }
            }
            continue;
        }
        if !in_store {
            continue;
        }
        let cur = out.last_mut().expect("inside a section");
        let l = line.trim();
        let (k, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let v = v.trim();
        match k {
            "path" => cur.path = PathBuf::from(v),
            "maintenance-mode" => cur.maintenance_mode = Some(v.to_string()),
            "backend" => cur.backend = Some(v.to_string()),
            _ => {}
        }
    }
    out
}

/// The PBS store configured at `root` (compared canonically), or the one named `name`.
/// `Ok(None)` when there is no PBS configuration or no section matches.
pub fn find_store(root: &Path, name: Option<&str>) -> Result<Option<StoreConfig>> {
    let cfg = config_dir().join("datastore.cfg");
    let text = match fs::read_to_string(&cfg) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match name {
                Some(n) => Err(Error::not_found(format!(
                    "{} (needed for PBS datastore '{n}')",
                    cfg.display()
                ))),
                None => Ok(None),
            }
        }
        Err(e) => return Err(Error::io(cfg.display(), e)),
    };
    let stores = parse_datastore_cfg(&text);
    if let Some(n) = name {
        let s = stores
            .into_iter()
            .find(|s| s.name == n)
            .ok_or_else(|| Error::not_found(format!("PBS datastore '{n}' in {}", cfg.display())))?;
        return Ok(Some(s));
    }
    let want = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    Ok(stores
        .into_iter()
        .find(|s| fs::canonicalize(&s.path).unwrap_or_else(|_| s.path.clone()) == want))
}

/// The `backup` user and group that PBS runs as (Debian: 34:34).
pub fn backup_user() -> Owner {
    let find = |file: &str| -> Option<u32> {
        let text = fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"backup") && f.len() > 2).then(|| f[2].parse().ok())?
        })
    };
    Owner {
        uid: find("/etc/passwd").unwrap_or(34),
        gid: find("/etc/group").unwrap_or(34),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_refusals() {
        let cfg = "datastore: store1\n\tpath /mnt/s1\n\tcomment x\n\n\
                   datastore: s3store\n\tpath /mnt/s3\n\tbackend type=s3,client=c,bucket=b\n\
                   datastore: maint\n\tpath /mnt/m\n\tmaintenance-mode type=read-only,message=disk swap\n\
                   other: x\n\tpath /nope\n";
        let s = parse_datastore_cfg(cfg);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "store1");
        assert_eq!(s[0].path, PathBuf::from("/mnt/s1"));
        assert_eq!(s[0].write_refusal(), None);
        assert!(s[1].write_refusal().unwrap().contains("S3"));
        let m = s[2].write_refusal().unwrap();
        assert!(m.contains("read-only") && m.contains("disk swap"), "{m}");
    }
}
