//! `pbsfs notes`: print snapshot or group notes byte-exact, or set them (one manifest
//! transaction for a snapshot; group lock + atomic replace for a group).

use std::io::{Read, Write};

use crate::cli::NotesArgs;
use crate::store::format::names::BackupGroup;
use crate::util::error::{exit, Error, IoContext, Result};

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
    let is_group = args.target.matches('/').count() == 1;
    let mut out = std::io::stdout();
    if is_group {
        let g = BackupGroup::parse(&ns, &args.target)?;
        match new {
            Some(n) => ds.set_group_notes(&g, &n)?,
            None => out.write_all(&ds.group_notes(&g)?).ctx("stdout")?,
        }
    } else {
        let d = super::resolve_snapshot(&ds, &ns, &args.target)?;
        match new {
            Some(n) => ds.set_snapshot_notes(&d, &n)?,
            None => {
                let m = ds.load_manifest(&d)?;
                out.write_all(m.notes().unwrap_or("").as_bytes())
                    .ctx("stdout")?;
            }
        }
    }
    out.flush().map_err(|e| Error::io("stdout", e))?;
    Ok(exit::OK)
}
