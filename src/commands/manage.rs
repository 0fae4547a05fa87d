//! `pbsfs forget`, `pbsfs protected`, `pbsfs prune` and `pbsfs gc`: removing snapshots
//! and chunks. Prune and gc show a bar on a terminal, end with a summary, and print
//! PBS's JSON (its prune list, its GC status) with `--output-format`.

use serde_json::json;

use crate::cli::{OnOff, OutputFormat, PruneArgs};
use crate::commands::output::print_json;
use crate::commands::progress::{Bar, Unit};
use crate::store::format::names::BackupGroup;
use crate::store::ops::gc::{run_gc_with_progress, DEFAULT_ATIME_CUTOFF};
use crate::store::ops::prune::{compute_prune, KeepOptions, PruneMark};
use crate::store::ops::ProgressFn;
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
    if !args.output_format.is_json() {
        for (s, mark) in &plan {
            println!("{} {mark}", s.dir.name());
        }
    }
    // Oldest first; a snapshot that cannot be removed now (locked) is logged and skipped.
    let doomed = plan.iter().filter(|(_, m)| *m == PruneMark::Remove).count() as u64;
    let bar = Bar::new(Unit::Count, &format!("prune {g}: snapshots removed"));
    let mut removed = std::collections::HashSet::new();
    if !args.dry_run {
        for (s, mark) in plan.iter().rev() {
            if *mark != PruneMark::Remove {
                continue;
            }
            match ds.destroy_snapshot(&s.dir) {
                Ok(()) => {
                    removed.insert(s.dir.time);
                }
                Err(e) => eprintln!("pbsfs: warning: could not remove {}: {e}", s.dir),
            }
            bar.set(removed.len() as u64, doomed);
        }
    }
    bar.finish();
    let kept = plan.len() as u64 - doomed;
    if args.output_format.is_json() {
        // PBS's PruneListItem (`keep`, `protected`), pbsfs's `mark` and, after a real
        // run, whether each snapshot is now gone.
        let list: Vec<_> = plan
            .iter()
            .map(|(s, mark)| {
                let mut v = json!({
                    "backup-type": s.dir.group.ty.as_str(),
                    "backup-id": s.dir.group.id,
                    "backup-time": s.dir.time,
                    "keep": mark.keeps(),
                    "protected": s.protected,
                    "mark": mark.to_string(),
                });
                if !s.dir.group.ns.is_root() {
                    v["ns"] = json!(s.dir.group.ns.to_string());
                }
                if !args.dry_run {
                    v["removed"] = json!(removed.contains(&s.dir.time));
                }
                v
            })
            .collect();
        print_json(&list, args.output_format)?;
    }
    // The summary goes to stderr: stdout is the list, one `NAME MARK` line each, which
    // scripts read line by line.
    if args.dry_run {
        eprintln!(
            "would prune {g}: {} to remove, {kept} kept (dry run: nothing removed)",
            count(doomed, "snapshot")
        );
    } else {
        let failed = match doomed - removed.len() as u64 {
            0 => String::new(),
            n => format!(", {n} could not be removed"),
        };
        eprintln!(
            "pruned {g}: {} removed, {kept} kept{failed}",
            count(removed.len() as u64, "snapshot")
        );
    }
    Ok(exit::OK)
}

/// `force` runs GC on a store PBS manages too (refused otherwise, spec §11.9).
pub fn gc(
    store: &std::path::Path,
    cutoff: Option<u64>,
    force: bool,
    format: OutputFormat,
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
    let bar = Bar::new(Unit::Count, "gc");
    let tell = |p| bar.ops(p);
    let progress: Option<ProgressFn> = bar.is_drawn().then_some(&tell);
    let r = run_gc_with_progress(&ds, cutoff.unwrap_or(DEFAULT_ATIME_CUTOFF), force, progress)?;
    bar.finish();
    if r.missing_chunks > 0 {
        eprintln!(
            "pbsfs: warning: {} referenced chunks are missing; run pbsfs verify",
            r.missing_chunks
        );
    }
    if format.is_json() {
        let mut v = r.status_json();
        v["missing-chunks"] = json!(r.missing_chunks);
        print_json(&v, format)?;
        return Ok(exit::OK);
    }
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
    Ok(exit::OK)
}
