//! `pbsfs init` and `pbsfs backup`: a progress bar on a terminal, a summary line, and
//! backup's summary as JSON with `--output-format`.

use crate::util::count;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::backup::{run_backup, ArchiveSource, BackupOptions, DEFAULT_CHUNK_SIZE};
use crate::cli::BackupArgs;
use crate::commands::output::print_json;
use crate::commands::progress::{self, Bar, Unit};
use crate::store::format::names::BackupGroup;
use crate::store::Datastore;
use crate::util::error::{exit, Result};

pub fn init(store: &Path) -> Result<i32> {
    let started = Instant::now();
    let bar = Bar::new(Unit::Count, "init: chunk folders");
    let tell = |p| bar.ops(p);
    let progress: Option<crate::store::ops::ProgressFn> = bar.is_drawn().then_some(&tell);
    let ds = Datastore::create_with_progress(store, true, progress)?;
    bar.finish();
    println!(
        "created datastore {} (65536 chunk folders) in {:.1} s",
        ds.root().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(exit::OK)
}

pub fn run(args: &BackupArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let group = BackupGroup::parse(&ns, &args.group)?;
    let sources = args
        .archives
        .iter()
        .map(|a| ArchiveSource::parse(a))
        .collect::<Result<Vec<_>>>()?;
    let time = args
        .backup_time
        .as_deref()
        .map(crate::util::time::parse_time_arg)
        .transpose()?;
    let opts = BackupOptions {
        time,
        notes: args.notes.clone(),
        chunk_size: args.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE),
        owner: args.owner.clone(),
        create_ns: args.create_ns,
        progress: progress::terminal_bytes("backup"),
        excludes: args.exclude.clone(),
        all_file_systems: args.all_file_systems,
        change_detection: args.change_detection_mode,
    };
    let r = run_backup(&ds, &group, &sources, &opts)?;
    progress::finish_bytes();
    let snap = r
        .snapshot
        .as_ref()
        .expect("a finished backup names its snapshot");
    if args.output_format.is_json() {
        let mut v = json!({
            "backup-type": snap.group.ty.as_str(),
            "backup-id": snap.group.id,
            "backup-time": snap.time,
            "size": r.bytes,
            "chunk-count": r.chunks,
            "chunk-new": r.new_chunks,
            "chunk-reused": r.reused_chunks,
            "size-new": r.new_bytes,
            "duration": r.seconds,
            "warnings": r.warnings,
            "pxar-archives": r.pxar_archives,
            "files-read": r.files_read,
            "file-bytes-read": r.file_bytes_read,
            "files-reused": r.files_reused,
            "file-bytes-reused": r.file_bytes_reused,
        });
        if !snap.group.ns.is_root() {
            v["ns"] = json!(snap.group.ns.to_string());
        }
        print_json(&v, args.output_format)?;
        return Ok(exit::OK);
    }
    let mib = r.bytes as f64 / (1024.0 * 1024.0);
    let dedup = if r.dedup_ratio().is_finite() {
        format!("{:.2}x", r.dedup_ratio())
    } else {
        "all reused".to_string()
    };
    let warnings = match r.warnings {
        0 => String::new(),
        n => format!(", {}", count(n, "warning")),
    };
    println!(
        "{snap}: {} ({mib:.1} MiB) in {}, {} new, {} reused, {} new bytes, dedup \
         {dedup}, {:.1} MiB/s{warnings}",
        count(r.bytes, "byte"),
        count(r.chunks as u64, "chunk"),
        r.new_chunks,
        r.reused_chunks,
        r.new_bytes,
        mib / r.seconds.max(1e-6)
    );
    if r.pxar_archives > 0 {
        println!(
            "files: {} re-read ({} bytes read), {} referenced from the previous snapshot ({} \
             bytes reused)",
            r.files_read, r.file_bytes_read, r.files_reused, r.file_bytes_reused
        );
    }
    Ok(exit::OK)
}
