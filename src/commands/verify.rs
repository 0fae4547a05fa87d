//! `pbsfs verify`: verify a snapshot, a group, or every snapshot of the store; report
//! every bad chunk with the archives that reference it. Exit 1 when damage was found.

use crate::cli::VerifyArgs;
use crate::store::format::names::{BackupDir, BackupGroup};
use crate::store::ops::verify::{verify_snapshots, SnapshotOutcome, VerifyOptions};
use crate::util::count;
use crate::util::error::{Error, Result};

pub fn run(args: &VerifyArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let finished = |g: &BackupGroup| -> Result<Vec<BackupDir>> {
        Ok(ds
            .list_snapshots(g)?
            .into_iter()
            .filter(|s| s.finished)
            .map(|s| s.dir)
            .collect())
    };
    let (dirs, worker) = match &args.target {
        Some(t) if t.matches('/').count() == 1 => {
            (finished(&BackupGroup::parse(&ns, t)?)?, "verify_group")
        }
        Some(t) => {
            let d = super::resolve_snapshot(&ds, &ns, t)?;
            // A damaged manifest is damage (exit 1), found by the verify itself.
            if !ds.snapshot_info(&d)?.finished {
                return Err(Error::NotFinished {
                    snapshot: d.to_string(),
                });
            }
            (vec![d], "verify_snapshot")
        }
        None => {
            let spaces = match &args.ns {
                Some(_) => vec![ns.clone()],
                None => ds.list_all_namespaces()?,
            };
            let mut v = Vec::new();
            for n in spaces {
                for g in ds.list_groups(&n)? {
                    v.extend(finished(&g)?);
                }
            }
            (v, "verify")
        }
    };
    let opts = VerifyOptions {
        ignore_verified: args.ignore_verified,
        outdated_after: args.outdated_after,
        rename_bad: !args.keep_bad,
        worker_type: worker.into(),
    };
    let report = verify_snapshots(&ds, &dirs, &opts)?;
    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    for (d, o) in &report.snapshots {
        match o {
            SnapshotOutcome::Ok => {
                ok += 1;
                println!("{d}: ok");
            }
            SnapshotOutcome::Failed(problems) => {
                failed += 1;
                println!("{d}: FAILED");
                for p in problems {
                    println!("  {p}");
                }
            }
            SnapshotOutcome::AlreadyVerified => {
                skipped += 1;
                println!("{d}: skipped (already verified)");
            }
            SnapshotOutcome::Locked(why) => {
                skipped += 1;
                println!("{d}: SKIPPED: could not acquire snapshot lock ({why})");
            }
        }
    }
    for (digest, bad) in &report.bad_chunks {
        eprintln!(
            "bad chunk {digest}: {}; referenced by {}",
            bad.reason(),
            bad.archives.join(", ")
        );
    }
    for e in &report.record_errors {
        eprintln!("pbsfs: error: {e}");
    }
    if let Some(why) = &report.not_recorded {
        eprintln!("pbsfs: note: verify_state not recorded and no chunk renamed: {why}");
    }
    println!(
        "verified {}: {ok} ok, {failed} failed, {skipped} skipped; {} checked, {} bad{}",
        count(report.snapshots.len() as u64, "snapshot"),
        count(report.chunks_checked, "chunk"),
        report.bad_chunks.len(),
        if report.encrypted_chunks > 0 {
            format!(
                ", {} encrypted (CRC and size only, not verifiable by content)",
                report.encrypted_chunks
            )
        } else {
            String::new()
        }
    );
    Ok(report.exit_code())
}
