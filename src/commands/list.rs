//! `pbsfs snapshots` and `pbsfs groups`: text tables or JSON with PBS's API field names,
//! and, without `--ns`, a note on stderr when other namespaces hold snapshots.

use std::path::Path;

use serde_json::{json, Value};

use super::namespaces::other_namespaces_note;
use crate::cli::{OutputFormat, SnapshotsArgs};
use crate::store::format::names::BackupGroup;
use crate::store::{Datastore, SnapshotInfo};
use crate::util::error::{exit, Result};

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// One snapshot as PBS's API lists it; `owner`: its group's, when readable.
fn snapshot_json(ds: &Datastore, s: &SnapshotInfo, owner: Option<&str>) -> Value {
    let mut v = json!({
        "backup-type": s.dir.group.ty.as_str(),
        "backup-id": s.dir.group.id,
        "backup-time": s.dir.time,
        "protected": s.protected,
    });
    if let Some(o) = owner {
        v["owner"] = Value::from(o);
    }
    if !s.dir.group.ns.is_root() {
        v["ns"] = Value::from(s.dir.group.ns.to_string());
    }
    if !s.finished {
        // As PBS lists a snapshot without manifest: the folder's files, by name alone.
        let files: Vec<Value> = ds
            .snapshot_files(&s.dir)
            .unwrap_or_default()
            .iter()
            .map(|a| json!({"filename": a.file()}))
            .collect();
        v["files"] = Value::Array(files);
        v["unfinished"] = Value::Bool(true);
        return v;
    }
    match ds.load_manifest(&s.dir) {
        Ok(m) => {
            let files = m.files().unwrap_or_default();
            let size: u64 = files.iter().map(|f| f.size).sum();
            v["size"] = Value::from(size);
            v["files"] = Value::Array(
                files
                    .iter()
                    .map(|f| json!({"filename": f.filename, "crypt-mode": f.crypt_mode.as_str(), "size": f.size}))
                    .collect(),
            );
            if let Some(n) = m.notes() {
                v["comment"] = Value::from(first_line(n));
            }
            // As PBS: an unparsable state (a bad UPID) is no verification at all;
            // pbsfs says why instead of showing the state it claims.
            match m.verify_state() {
                Some(Ok(vs)) => v["verification"] = vs.to_value(),
                Some(Err(e)) => v["verification-invalid"] = Value::from(e.to_string()),
                None => {}
            }
        }
        Err(e) => {
            v["error"] = Value::from(e.to_string());
        }
    }
    v
}

fn human(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Without `--ns` only the root namespace is listed: the note on other namespaces'
/// snapshots (see `namespaces::other_namespaces_note`), or `None`.
fn note_for(
    ds: &Datastore,
    store: &Path,
    ns: Option<&str>,
    unfinished: bool,
    root_empty: bool,
) -> Option<String> {
    ns.is_none()
        .then(|| other_namespaces_note(ds, store, unfinished, root_empty))
        .flatten()
}

/// The note goes to stderr, never stdout (where it would break JSON): after the
/// listing, so it is the last line a user sees, or before the error it explains (a
/// group only another namespace has is "not found" in the root).
fn print_note(note: Option<String>) {
    if let Some(n) = note {
        eprintln!("pbsfs: note: {n}");
    }
}

fn snapshot_rows(ds: &Datastore, args: &SnapshotsArgs) -> Result<Vec<Value>> {
    let ns = super::parse_ns(args.ns.as_deref())?;
    let groups = match &args.group {
        Some(g) => vec![BackupGroup::parse(&ns, g)?],
        None => ds.list_groups(&ns)?,
    };
    let mut rows = Vec::new();
    for g in &groups {
        let snaps = ds.list_snapshots(g)?;
        let owner = ds.group_owner(g).ok();
        for s in snaps {
            if s.finished || args.all {
                rows.push(snapshot_json(ds, &s, owner.as_deref()));
            }
        }
    }
    Ok(rows)
}

pub fn snapshots(args: &SnapshotsArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let rows = snapshot_rows(&ds, args);
    let root_empty = args.group.is_none() && rows.as_ref().is_ok_and(Vec::is_empty);
    // A group the user named and the root has: the other namespaces are not the
    // question (only when it is missing do they explain the error).
    let note = match (&args.group, &rows) {
        (Some(_), Ok(_)) => None,
        _ => note_for(&ds, &args.store, args.ns.as_deref(), args.all, root_empty),
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            print_note(note);
            return Err(e);
        }
    };
    if args.output_format.is_json() {
        super::output::print_json(&rows, args.output_format)?;
        print_note(note);
        return Ok(exit::OK);
    }
    println!(
        "{:<40} {:>10} {:>5} {:<8} {:<9} notes",
        "snapshot", "size", "files", "verify", "protected"
    );
    for r in &rows {
        let name = format!(
            "{}/{}/{}",
            r["backup-type"].as_str().unwrap_or(""),
            r["backup-id"].as_str().unwrap_or(""),
            crate::util::time::format_utc(r["backup-time"].as_i64().unwrap_or(0))
                .unwrap_or_default()
        );
        let unfinished = r.get("unfinished").is_some();
        let size = r
            .get("size")
            .and_then(Value::as_u64)
            .map(human)
            .unwrap_or_else(|| "-".into());
        let files = r["files"].as_array().map(|a| a.len()).unwrap_or(0);
        let verify = match r.get("verification").and_then(|v| v.get("state")) {
            Some(s) => s.as_str().unwrap_or("invalid"),
            None if r.get("verification-invalid").is_some() => "invalid",
            None if unfinished => "-",
            None => "none",
        };
        let prot = if r["protected"].as_bool().unwrap_or(false) {
            "yes"
        } else {
            "no"
        };
        let comment = if unfinished {
            "(unfinished)".to_string()
        } else if let Some(e) = r.get("error").and_then(Value::as_str) {
            format!("(error: {e})")
        } else {
            r.get("comment")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        println!("{name:<40} {size:>10} {files:>5} {verify:<8} {prot:<9} {comment}");
    }
    print_note(note);
    Ok(exit::OK)
}

fn group_rows(ds: &Datastore, ns: Option<&str>) -> Result<Vec<Value>> {
    let ns = super::parse_ns(ns)?;
    let mut rows = Vec::new();
    for g in ds.list_groups(&ns)? {
        let snaps: Vec<SnapshotInfo> = ds
            .list_snapshots(&g)?
            .into_iter()
            .filter(|s| s.finished)
            .collect();
        let mut v = json!({
            "backup-type": g.ty.as_str(),
            "backup-id": g.id,
            "backup-count": snaps.len(),
            "owner": ds.group_owner(&g).unwrap_or_default(),
            "comment": first_line(&String::from_utf8_lossy(&ds.group_notes(&g).unwrap_or_default())),
        });
        if let Some(last) = snaps.last() {
            v["last-backup"] = Value::from(last.dir.time);
            if let Ok(m) = ds.load_manifest(&last.dir) {
                v["files"] = json!(m
                    .files()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| f.filename.clone())
                    .collect::<Vec<_>>());
            }
        }
        rows.push(v);
    }
    Ok(rows)
}

pub fn groups(
    store: &Path,
    ns: Option<&str>,
    format: OutputFormat,
    pbs: Option<&str>,
) -> Result<i32> {
    let ds = super::open_store(store, pbs)?;
    let rows = group_rows(&ds, ns);
    // Groups whose every snapshot was forgotten are listed, yet hold none.
    let root_empty = rows
        .as_ref()
        .is_ok_and(|r| r.iter().all(|g| g["backup-count"] == 0));
    let note = note_for(&ds, store, ns, false, root_empty);
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            print_note(note);
            return Err(e);
        }
    };
    if format.is_json() {
        super::output::print_json(&rows, format)?;
        print_note(note);
        return Ok(exit::OK);
    }
    println!(
        "{:<24} {:>9} {:<22} {:<16} notes",
        "group", "snapshots", "last backup", "owner"
    );
    for r in &rows {
        let name = format!(
            "{}/{}",
            r["backup-type"].as_str().unwrap_or(""),
            r["backup-id"].as_str().unwrap_or("")
        );
        let last = r
            .get("last-backup")
            .and_then(Value::as_i64)
            .and_then(crate::util::time::format_utc)
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<24} {:>9} {last:<22} {:<16} {}",
            r["backup-count"],
            r["owner"].as_str().unwrap_or(""),
            r["comment"].as_str().unwrap_or("")
        );
    }
    print_note(note);
    Ok(exit::OK)
}
