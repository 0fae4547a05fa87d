//! `pbsfs init` and `pbsfs backup`.

use crate::util::count;
use std::path::Path;

use crate::backup::{run_backup, ArchiveSource, BackupOptions, DEFAULT_CHUNK_SIZE};
use crate::cli::BackupArgs;
use crate::store::format::names::BackupGroup;
use crate::store::Datastore;
use crate::util::error::{exit, Result};

pub fn init(store: &Path) -> Result<i32> {
    let ds = Datastore::create(store, true)?;
    println!("created datastore {}", ds.root().display());
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
        progress: super::terminal_progress(),
        excludes: args.exclude.clone(),
        all_file_systems: args.all_file_systems,
        change_detection: args.change_detection_mode,
    };
    let r = run_backup(&ds, &group, &sources, &opts)?;
    super::finish_progress();
    let snap = r
        .snapshot
        .as_ref()
        .expect("a finished backup names its snapshot");
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
