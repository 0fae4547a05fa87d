//! `pbsfs notes`: print snapshot or group notes byte-exact, or set them (one manifest
//! transaction for a snapshot; group lock + atomic replace for a group). With JSON,
//! the object of PBS's client (`{"notes": ...}`) and the snapshot or group it names.

use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::cli::NotesArgs;
use crate::store::format::names::BackupGroup;
use crate::util::error::{exit, Error, IoContext, Result};

/// `{"notes": ...}` as `proxmox-backup-client snapshot notes show` prints it, with
/// PBS's names of what the notes belong to: `backup-type`, `backup-id`, for a snapshot
/// `backup-time`, and `ns` outside the root. Notes that are not UTF-8 (group notes are
/// bytes as written) show U+FFFD for their bad bytes: the text output is byte-exact.
fn notes_json(g: &BackupGroup, time: Option<i64>, notes: &[u8]) -> Value {
    let mut v = json!({
        "notes": String::from_utf8_lossy(notes),
        "backup-type": g.ty.as_str(),
        "backup-id": g.id,
    });
    if let Some(t) = time {
        v["backup-time"] = Value::from(t);
    }
    if !g.ns.is_root() {
        v["ns"] = Value::from(g.ns.to_string());
    }
    v
}

pub fn run(args: &NotesArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let new: Option<Vec<u8>> = match (&args.set, &args.set_file) {
        (Some(t), _) => Some(t.as_bytes().to_vec()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).ctx("stdin")?;
            Some(b)
        }
        (None, Some(f)) => Some(std::fs::read(f).ctx(f.display())?),
        (None, None) => None,
    };
    // Text after a set prints nothing (the exit code says the notes are stored); JSON
    // after a set reads them back, so it shows what is stored.
    let show = new.is_none() || args.output_format.is_json();
    let is_group = args.target.matches('/').count() == 1;
    let (group, time, notes) = if is_group {
        let g = BackupGroup::parse(&ns, &args.target)?;
        if let Some(n) = &new {
            ds.set_group_notes(&g, n)?;
        }
        if !show {
            return Ok(exit::OK);
        }
        let notes = ds.group_notes(&g)?;
        (g, None, notes)
    } else {
        let d = super::resolve_snapshot(&ds, &ns, &args.target)?;
        if let Some(n) = &new {
            ds.set_snapshot_notes(&d, n)?;
        }
        if !show {
            return Ok(exit::OK);
        }
        let m = ds.load_manifest(&d)?;
        let notes = m.notes().unwrap_or("").as_bytes().to_vec();
        (d.group, Some(d.time), notes)
    };
    if args.output_format.is_json() {
        super::output::print_json(&notes_json(&group, time, &notes), args.output_format)?;
    } else {
        let mut out = std::io::stdout();
        out.write_all(&notes).ctx("stdout")?;
        out.flush().map_err(|e| Error::io("stdout", e))?;
    }
    Ok(exit::OK)
}
