//! `pbsfs verify`: verify a snapshot, a group, or every snapshot of the store; report
//! every bad chunk with the archives that reference it. Exit 1 when damage was found,
//! whatever the output format. A bar on a terminal (snapshots and chunks); the result
//! as text or, with `--output-format`, one JSON document; bad chunks and errors are
//! always also said on stderr, so a digest is never lost.

use serde_json::{json, Value};

use crate::cli::VerifyArgs;
use crate::commands::output::print_json;
use crate::commands::progress::{Bar, Unit};
use crate::store::format::names::{BackupDir, BackupGroup};
use crate::store::ops::verify::{
    verify_snapshots_with_progress, SnapshotOutcome, VerifyOptions, VerifyReport,
};
use crate::store::ops::ProgressFn;
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
    let bar = Bar::new(Unit::Count, "verify: chunks");
    let tell = |p| bar.ops(p);
    let progress: Option<ProgressFn> = bar.is_drawn().then_some(&tell);
    let report = verify_snapshots_with_progress(&ds, &dirs, &opts, progress)?;
    bar.finish();
    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    let text = !args.output_format.is_json();
    for (d, o) in &report.snapshots {
        match o {
            SnapshotOutcome::Ok => {
                ok += 1;
                if text {
                    println!("{d}: ok");
                }
            }
            SnapshotOutcome::Failed(problems) => {
                failed += 1;
                if text {
                    println!("{d}: FAILED");
                    for p in problems {
                        println!("  {p}");
                    }
                }
            }
            SnapshotOutcome::AlreadyVerified => {
                skipped += 1;
                if text {
                    println!("{d}: skipped (already verified)");
                }
            }
            SnapshotOutcome::Locked(why) => {
                skipped += 1;
                if text {
                    println!("{d}: SKIPPED: could not acquire snapshot lock ({why})");
                }
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
    if !text {
        print_json(
            &report_json(&report, [ok, failed, skipped]),
            args.output_format,
        )?;
        return Ok(report.exit_code());
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

/// The JSON document of a verify run: each snapshot's state (`ok`, `failed`, `skipped`)
/// with its reasons, each bad chunk with the archives referencing it, the totals.
fn report_json(report: &VerifyReport, [ok, failed, skipped]: [u64; 3]) -> Value {
    let snapshots: Vec<Value> = report
        .snapshots
        .iter()
        .map(|(d, o)| {
            let (state, reasons) = match o {
                SnapshotOutcome::Ok => ("ok", Vec::new()),
                SnapshotOutcome::Failed(problems) => ("failed", problems.clone()),
                SnapshotOutcome::AlreadyVerified => ("skipped", vec!["already verified".into()]),
                SnapshotOutcome::Locked(why) => (
                    "skipped",
                    vec![format!("could not acquire snapshot lock ({why})")],
                ),
            };
            let mut v = json!({
                "backup-type": d.group.ty.as_str(),
                "backup-id": d.group.id,
                "backup-time": d.time,
                "state": state,
                "reasons": reasons,
            });
            if !d.group.ns.is_root() {
                v["ns"] = json!(d.group.ns.to_string());
            }
            v
        })
        .collect();
    let bad: Vec<Value> = report
        .bad_chunks
        .iter()
        .map(|(digest, b)| {
            json!({
                "digest": digest.to_hex(),
                "reason": b.reason(),
                "missing": b.is_missing(),
                "archives": b.archives,
            })
        })
        .collect();
    json!({
        "snapshots": snapshots,
        "bad-chunks": bad,
        "totals": {
            "snapshots": report.snapshots.len(),
            "ok": ok,
            "failed": failed,
            "skipped": skipped,
            "chunks-checked": report.chunks_checked,
            "chunks-bad": report.bad_chunks.len(),
            "chunks-encrypted": report.encrypted_chunks,
        },
        "errors": report.record_errors,
        "not-recorded": report.not_recorded,
    })
}
