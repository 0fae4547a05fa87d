//! What a datastore allows, decided as PBS's `MaintenanceMode::check` decides it, plus
//! what the medium allows: a maintenance mode `read-only` refuses writes; `offline`,
//! `unmount`, `s3-refresh` and `delete` refuse reads as well; an S3-backed store is never
//! written and its chunks are in the bucket (the local `.chunks/` holds zero-length
//! markers, never to be read as chunks); a store on a read-only file system is read.

use std::fmt;

use crate::store::pbs_config::StoreConfig;

/// Why something is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restriction {
    /// `maintenance-mode` of the store's `datastore.cfg` section.
    Maintenance {
        store: String,
        mode: String,
        message: Option<String>,
    },
    /// `backend type=s3`: the data lives in a bucket pbsfs does not read yet.
    S3 { store: String },
    /// The file system holding the store is mounted read-only.
    ReadOnlyMedium,
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Restriction::Maintenance {
                store,
                mode,
                message,
            } => {
                write!(f, "datastore '{store}' is in maintenance mode '{mode}'")?;
                if let Some(m) = message {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            Restriction::S3 { store } => write!(
                f,
                "datastore '{store}' is S3-backed: its chunks are in the bucket (reading \
                 them is not supported yet) and local edits would not reach it"
            ),
            Restriction::ReadOnlyMedium => write!(f, "the datastore's file system is read-only"),
        }
    }
}

/// What may be done with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Why nothing may be written, if so.
    pub no_writes: Option<Restriction>,
    /// Why nothing may be read, if so (then nothing may be written either).
    pub no_reads: Option<Restriction>,
    /// Why chunk data cannot be read here although metadata can (S3).
    pub no_chunks: Option<Restriction>,
}

impl Access {
    /// From the store's PBS section (if any) and whether its file system is read-only.
    pub fn of(cfg: Option<&StoreConfig>, read_only_medium: bool) -> Access {
        let mut a = Access {
            no_writes: read_only_medium.then_some(Restriction::ReadOnlyMedium),
            no_reads: None,
            no_chunks: None,
        };
        let Some(cfg) = cfg else {
            return a;
        };
        if let Some(b) = &cfg.backend {
            if property(b, "type").as_deref() == Some("s3") {
                let r = Restriction::S3 {
                    store: cfg.name.clone(),
                };
                a.no_writes = Some(r.clone());
                a.no_chunks = Some(r);
            }
        }
        if let Some(m) = &cfg.maintenance_mode {
            let mode = property(m, "type").unwrap_or_default();
            if !mode.is_empty() {
                let r = Restriction::Maintenance {
                    store: cfg.name.clone(),
                    mode: mode.clone(),
                    message: property(m, "message"),
                };
                // PBS: read-only refuses writes only; every other mode refuses all.
                if mode != "read-only" {
                    a.no_reads = Some(r.clone());
                }
                a.no_writes = Some(r);
            }
        }
        a
    }
}

/// A value of a property string `k=v,k2=v2` (the first key may be implicit: `type`).
/// Values may be quoted (`message="a, b"`) as PBS writes them.
pub(crate) fn property(s: &str, key: &str) -> Option<String> {
    for (i, part) in split_properties(s).into_iter().enumerate() {
        match part.split_once('=') {
            Some((k, v)) if k.trim() == key => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v.to_string());
            }
            None if i == 0 && key == "type" => return Some(part.trim().to_string()),
            _ => {}
        }
    }
    None
}

/// Split at commas outside double quotes.
fn split_properties(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                out.last_mut().expect("one part").push(c);
            }
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("one part").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(mode: Option<&str>, backend: Option<&str>) -> StoreConfig {
        StoreConfig {
            name: "s1".into(),
            path: PathBuf::from("/s"),
            maintenance_mode: mode.map(String::from),
            backend: backend.map(String::from),
            ..StoreConfig::default()
        }
    }

    #[test]
    fn modes_refuse_what_pbs_refuses() {
        let a = Access::of(None, false);
        assert!(a.no_writes.is_none() && a.no_reads.is_none() && a.no_chunks.is_none());
        let a = Access::of(
            Some(&cfg(Some("type=read-only,message=\"disk, swap\""), None)),
            false,
        );
        assert!(a.no_reads.is_none());
        let w = a.no_writes.unwrap().to_string();
        assert!(
            w.contains("'read-only'") && w.contains("(disk, swap)"),
            "{w}"
        );
        for mode in ["offline", "unmount", "s3-refresh", "delete", "type=offline"] {
            let a = Access::of(Some(&cfg(Some(mode), None)), false);
            assert!(a.no_reads.is_some() && a.no_writes.is_some(), "{mode}");
        }
        let a = Access::of(Some(&cfg(None, Some("type=s3,client=c,bucket=b"))), false);
        assert!(a.no_reads.is_none() && a.no_writes.is_some() && a.no_chunks.is_some());
        let a = Access::of(Some(&cfg(None, Some("type=filesystem"))), true);
        assert_eq!(a.no_writes, Some(Restriction::ReadOnlyMedium));
        assert!(a.no_chunks.is_none());
    }
}
