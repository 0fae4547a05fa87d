//! `pbsfs forget`, `pbsfs protected`, `pbsfs prune` and `pbsfs gc`: removing snapshots
//! and chunks.

use crate::cli::{OnOff, PruneArgs};
use crate::store::format::names::BackupGroup;
use crate::store::ops::gc::{run_gc, DEFAULT_ATIME_CUTOFF};
use crate::store::ops::prune::{compute_prune, KeepOptions, PruneMark};
use crate::util::count;
use crate::util::error::{exit, Result};

pub fn forget(
    store: &std::path::Path,
    ns: Option<&str>,
    snapshot: &str,
    pbs: Option<&str>,
) -> Result<i32> {
    let ds = super::open_store(store, pbs)?;
    let ns = super::parse_ns(ns)?;
    let d = super::resolve_snapshot(&ds, &ns, snapshot)?;
    ds.destroy_snapshot(&d)?;
    println!("removed {d}");
    Ok(exit::OK)
}

pub fn protected(
    store: &std::path::Path,
    ns: Option<&str>,
    snapshot: &str,
    state: Option<OnOff>,
    pbs: Option<&str>,
) -> Result<i32> {
    let ds = super::open_store(store, pbs)?;
    let ns = super::parse_ns(ns)?;
    let d = super::resolve_snapshot(&ds, &ns, snapshot)?;
    match state {
        Some(s) => ds.set_protected(&d, s == OnOff::On)?,
        None => println!(
            "{}",
            if ds.snapshot_info(&d)?.protected {
                "on"
            } else {
                "off"
            }
        ),
    }
    Ok(exit::OK)
}

pub fn prune(args: &PruneArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let g = BackupGroup::parse(&ns, &args.group)?;
    let opts = KeepOptions {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
    };
    // A prune is a write even when it finds nothing to remove (PBS refuses it in
    // maintenance mode); a dry run only reads.
    if !args.dry_run {
        ds.check_writable()?;
    }
    let plan = compute_prune(ds.list_snapshots(&g)?, &opts)?;
    if opts.keeps_all() {
        // PBS's rule: no keep option keeps everything. Said, since it is rarely meant.
        eprintln!(
            "pbsfs: no --keep-* option given: every snapshot is kept, nothing can be removed"
        );
    }
    for (s, mark) in &plan {
        println!("{} {mark}", s.dir.name());
    }
    if args.dry_run {
        return Ok(exit::OK);
    }
    // Oldest first; a snapshot that cannot be removed now (locked) is logged and skipped.
    for (s, mark) in plan.iter().rev() {
        if *mark == PruneMark::Remove {
            if let Err(e) = ds.destroy_snapshot(&s.dir) {
                eprintln!("pbsfs: warning: could not remove {}: {e}", s.dir);
            }
        }
    }
    Ok(exit::OK)
}

/// `force` runs GC on a store PBS manages too (refused otherwise, spec §11.9).
pub fn gc(
    store: &std::path::Path,
    cutoff: Option<u64>,
    force: bool,
    pbs: Option<&str>,
) -> Result<i32> {
    let ds = super::open_store(store, pbs)?;
    if let (Some(cfg), true) = (ds.pbs_config(), force) {
        eprintln!(
            "pbsfs: warning: running GC on PBS datastore '{}' by force: PBS's backups, pulls \
             and tape restores cannot start until it ends",
            cfg.name
        );
    }
    let r = run_gc(&ds, cutoff.unwrap_or(DEFAULT_ATIME_CUTOFF), force)?;
    println!(
        "index files: {} ({} of data)",
        r.index_file_count,
        count(r.index_data_bytes, "byte")
    );
    println!(
        "removed: {}, {} ({} bad)",
        count(r.removed_chunks, "chunk"),
        count(r.removed_bytes, "byte"),
        r.removed_bad
    );
    println!(
        "pending: {}, {}",
        count(r.pending_chunks, "chunk"),
        count(r.pending_bytes, "byte")
    );
    println!(
        "on disk: {}, {}; dedup factor {:.2}",
        count(r.disk_chunks, "chunk"),
        count(r.disk_bytes, "byte"),
        r.dedup_factor()
    );
    if r.still_bad > 0 {
        println!("bad chunks kept: {}", r.still_bad);
    }
    if r.missing_chunks > 0 {
        eprintln!(
            "pbsfs: warning: {} referenced chunks are missing; run pbsfs verify",
            r.missing_chunks
        );
    }
    Ok(exit::OK)
}
