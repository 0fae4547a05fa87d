//! Progress bars and JSON of the operation commands (init, verify, prune, gc, backup,
//! restore): a bar when stderr is a real terminal (a pty from util-linux `script`), no
//! control character and no bar text on a pipe, one summary line each, and each JSON
//! document parsed and checked against the store the test made. The text output of
//! these commands is proven by `cli.rs` and `corruption.rs`; not repeated here.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

/// Run `sh -c CMD` with a pseudo-terminal as its stdin, stdout and stderr (what an
/// interactive user has); returns what the terminal showed, and the exit code. A
/// command redirects its stdout to a file to keep it apart from the bar on stderr.
fn on_terminal(cmd: &str) -> (String, i32) {
    let out = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1) from util-linux");
    let code = out.status.code().expect("script exits, not killed");
    (String::from_utf8_lossy(&out.stdout).into_owned(), code)
}

/// A command's stderr on a pipe: no bar, so no escape, no carriage return, no bar text.
#[track_caller]
fn plain(stderr: &str, bar_text: &str) {
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r') && !stderr.contains(bar_text),
        "bar output on a pipe: {stderr:?}"
    );
}

/// The terminal drew (and then cleared) a bar titled `title`.
#[track_caller]
fn drew(tty: &str, title: &str) {
    assert!(
        tty.contains(title) && tty.contains("\x1b[2K"),
        "no bar '{title}' on the terminal: {tty:?}"
    );
}

/// `--output-format json` is one line, `json-pretty` the same value indented.
#[track_caller]
fn json_pair(args: &[&str], code: i32) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output-format", "json-pretty"]);
    let pretty = pbsfs(&a);
    exits(&pretty, code);
    plain(&stderr(&pretty), "eta ");
    let pv = pretty_json(&stdout(&pretty));
    let last = a.len() - 1;
    a[last] = "json";
    let compact = pbsfs(&a);
    exits(&compact, code);
    let c = stdout(&compact);
    assert_eq!(c.lines().count(), 1, "json is one line: {c}");
    let v: Value = serde_json::from_str(&c).expect("json parses");
    // A run may change the store (verify records state, prune removes), so the pair is
    // compared only where the caller makes it idempotent; the shapes always match.
    assert_eq!(keys(&v), keys(&pv));
    v
}

/// Parse `json-pretty` output, requiring it indented.
#[track_caller]
fn pretty_json(text: &str) -> Value {
    assert!(
        text.lines().count() > 3 && text.contains("\n  "),
        "not indented: {text}"
    );
    serde_json::from_str(text).expect("json-pretty parses")
}

fn keys(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => m.keys().cloned().collect(),
        Value::Array(a) => a.first().map(keys).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Six finished snapshots of `vm/1`, one a day; returns their times, oldest first.
fn six_days(store: &Path, tmp: &TempDir) -> Vec<i64> {
    let base = pbsfs::util::time::parse_time_arg("2024-03-01T12:00:00Z").unwrap();
    let times: Vec<i64> = (0..6).map(|d| base + d * 86_400).collect();
    for (i, t) in times.iter().enumerate() {
        let data = pseudo_random(2 * 4096, 40 + i as u64);
        ok(&backup_image(store, tmp, "vm/1", &data, &t.to_string()));
    }
    times
}

/// `init` (65536 folders, the slowest command that was silent) draws its bar on a
/// terminal, then its summary. The only full store of the module (seconds to make and
/// remove); that the same bar stays off a pipe is proven by the cheaper commands below.
#[test]
fn init_shows_its_folder_bar_on_a_terminal_then_a_summary() {
    let tmp = TempDir::new("progress-init");
    let store = tmp.join("full");
    let (tty, code) = on_terminal(&format!("{BIN} init {}", s(&store)));
    assert_eq!(code, 0, "{tty}");
    drew(&tty, "init: chunk folders");
    assert!(tty.contains("/65536"), "{tty:?}");
    let summary = format!("created datastore {} (65536 chunk folders) in ", s(&store));
    assert!(tty.contains(&summary), "{tty:?}");
    assert_eq!(
        std::fs::read_dir(store.join(".chunks")).unwrap().count(),
        65536
    );
}

/// Verify's JSON names the corrupt chunk's digest and the archives referencing it,
/// each snapshot's state, and exits 1 as the text form does; on a terminal the bar
/// counts snapshots and chunks while stdout carries the JSON untouched.
#[test]
fn verify_json_names_the_bad_chunk_and_exits_1_with_a_bar_on_a_terminal() {
    let tmp = TempDir::new("progress-verify");
    let store = sparse_store(&tmp);
    let shared = pseudo_random(4 * 4096, 7);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        &shared,
        "2024-01-01T00:00:00Z",
    ));
    let before = chunk_files(&store);
    let mut second = shared.clone();
    second.extend(pseudo_random(4096, 8));
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        &second,
        "2024-01-02T00:00:00Z",
    ));
    ok(&backup_image(
        &store,
        &tmp,
        "vm/2",
        &shared,
        "2024-01-02T00:00:00Z",
    ));
    // The one chunk only the second snapshot of vm/1 has: flip a byte in its middle.
    let only: Vec<_> = chunk_files(&store)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(only.len(), 1);
    let mut raw = std::fs::read(&only[0]).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x40;
    std::fs::write(&only[0], &raw).unwrap();
    let digest = only[0].file_name().unwrap().to_str().unwrap().to_string();

    // --keep-bad: the corrupt chunk stays, so every run below sees the same damage.
    let v = json_pair(&["verify", s(&store), "--keep-bad"], 1);
    let bad = v["bad-chunks"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["digest"], digest.as_str());
    assert_eq!(bad[0]["missing"], false);
    assert_eq!(
        bad[0]["archives"],
        serde_json::json!(["vm/1/2024-01-02T00:00:00Z/drive-scsi0.img.fidx"])
    );
    let states: Vec<(String, String, String)> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let t = pbsfs::util::time::format_utc(s["backup-time"].as_i64().unwrap()).unwrap();
            let id = format!(
                "{}/{}",
                s["backup-type"].as_str().unwrap(),
                s["backup-id"].as_str().unwrap()
            );
            (id, t, s["state"].as_str().unwrap().to_string())
        })
        .collect();
    let want = [
        ("vm/1", "2024-01-01T00:00:00Z", "ok"),
        ("vm/1", "2024-01-02T00:00:00Z", "failed"),
        ("vm/2", "2024-01-02T00:00:00Z", "ok"),
    ];
    assert_eq!(states, want.map(|(a, b, c)| (a.into(), b.into(), c.into())));
    let failed = &v["snapshots"][1]["reasons"][0];
    assert!(failed.as_str().unwrap().contains(&digest), "{failed}");
    let totals = &v["totals"];
    assert_eq!(
        [
            &totals["snapshots"],
            &totals["ok"],
            &totals["failed"],
            &totals["skipped"]
        ],
        [3, 2, 1, 0]
    );
    assert_eq!([&totals["chunks-checked"], &totals["chunks-bad"]], [5, 1]);
    assert_eq!(v["not-recorded"], Value::Null);

    // On a pipe the bad chunk is also said on stderr (never lost), with no bar.
    let out = pbsfs(&["verify", s(&store), "--keep-bad", "--output-format", "json"]);
    let err = fails_with(&out, 1);
    plain(&err, "verify: snapshot");
    assert!(err.contains(&format!("bad chunk {digest}")), "{err}");

    // --ignore-verified skips all three now: each is `skipped` with its reason.
    let v = json_pair(&["verify", s(&store), "--ignore-verified"], 0);
    assert!(
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "skipped"
                && s["reasons"] == serde_json::json!(["already verified"])),
        "{v}"
    );

    let json = tmp.join("verify.json");
    let (tty, code) = on_terminal(&format!(
        "{BIN} verify {} --keep-bad --output-format json > {}",
        s(&store),
        s(&json)
    ));
    assert_eq!(code, 1, "verify still exits 1 on a terminal: {tty}");
    drew(&tty, "verify: snapshot ");
    assert!(tty.contains(", chunks "), "{tty:?}");
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["bad-chunks"][0]["digest"], digest.as_str());
}

/// Prune's JSON is PBS's list (`keep`, `protected`); the dry run's keep flags are
/// exactly what the real run then leaves, and the real run's `removed` flags agree
/// with the store. The summary line goes to stderr (stdout is the list).
#[test]
fn prune_json_keep_flags_match_what_is_then_removed() {
    let tmp = TempDir::new("progress-prune");
    let store = sparse_store(&tmp);
    let times = six_days(&store, &tmp);
    pbsfs_ok(&["protected", s(&store), "vm/1/2024-03-02T12:00:00Z", "on"]);
    let args = ["prune", s(&store), "vm/1", "--keep-last", "2", "--dry-run"];
    let plan = json_pair(&args, 0);
    let plan = plan.as_array().unwrap();
    let kept: Vec<i64> = plan
        .iter()
        .filter(|p| p["keep"] == true)
        .map(|p| p["backup-time"].as_i64().unwrap())
        .collect();
    // Newest first; the two newest kept, the protected one kept, marked so.
    assert_eq!(kept, [times[5], times[4], times[1]]);
    assert!(plan
        .iter()
        .all(|p| p["backup-type"] == "vm" && p["backup-id"] == "1"));
    assert!(plan.iter().all(|p| p.get("removed").is_none()), "dry run");
    assert_eq!(plan[4]["protected"], true);
    assert_eq!(plan[4]["mark"], "protected");
    let out = pbsfs(&args);
    assert!(
        stderr(&out).contains("would prune vm/1: 3 snapshots to remove, 3 kept"),
        "{}",
        describe(&out)
    );
    assert_eq!(snapshots_json(&store).len(), 6, "a dry run removes nothing");

    let mut real = args[..5].to_vec();
    real.extend(["--output-format", "json"]);
    let out = pbsfs(&real);
    let err = stderr(&out);
    let done: Value = serde_json::from_str(&ok(&out)).unwrap();
    plain(&err, "prune vm/1:");
    assert!(
        err.contains("pruned vm/1: 3 snapshots removed, 3 kept"),
        "{err}"
    );
    let left: Vec<i64> = snapshots_json(&store)
        .iter()
        .map(|v| v["backup-time"].as_i64().unwrap())
        .collect();
    let mut want = kept.clone();
    want.sort();
    assert_eq!(left, want);
    for p in done.as_array().unwrap() {
        assert_eq!(p["removed"], p["keep"] == false, "{p}");
    }

    // On a terminal: a bar of the removals, then the summary.
    let tmp2 = TempDir::new("progress-prune-tty");
    let store2 = sparse_store(&tmp2);
    six_days(&store2, &tmp2);
    let (tty, code) = on_terminal(&format!(
        "{BIN} prune {} vm/1 --keep-last 1 > /dev/null",
        s(&store2)
    ));
    assert_eq!(code, 0, "{tty}");
    drew(&tty, "prune vm/1: snapshots removed");
    assert!(
        tty.contains("pruned vm/1: 5 snapshots removed, 1 kept"),
        "{tty:?}"
    );
}

/// GC's JSON is PBS's GC status: `removed-chunks` is the number of chunk files gone,
/// `disk-chunks` the number left; on a pipe no bar, on a terminal one per phase.
#[test]
fn gc_json_counts_the_chunk_files_it_removed() {
    let tmp = TempDir::new("progress-gc");
    let store = sparse_store(&tmp);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        &pseudo_random(4 * 4096, 3),
        "2024-01-01T00:00:00Z",
    ));
    ok(&backup_image(
        &store,
        &tmp,
        "vm/2",
        &pseudo_random(3 * 4096, 4),
        "2024-01-01T00:00:00Z",
    ));
    pbsfs_ok(&["forget", s(&store), "vm/2/latest"]);
    let before = chunk_files(&store);
    let old = pbsfs::util::time::now() - 2 * 86_400;
    for p in &before {
        pbsfs::util::sys::set_atime(p, old).unwrap();
    }
    let out = pbsfs(&["gc", s(&store), "--output-format", "json"]);
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    plain(&stderr(&out), "gc phase");
    let after = chunk_files(&store);
    assert_eq!(after.len(), 4);
    assert_eq!(
        v["removed-chunks"].as_u64(),
        Some((before.len() - after.len()) as u64)
    );
    assert_eq!(v["removed-chunks"], 3);
    assert_eq!(v["disk-chunks"], 4);
    assert_eq!(v["index-file-count"], 1);
    assert_eq!(v["index-data-bytes"], 4 * 4096);
    for k in [
        "upid",
        "disk-bytes",
        "removed-bytes",
        "pending-bytes",
        "pending-chunks",
        "removed-bad",
        "still-bad",
        "missing-chunks",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    // The same document PBS keeps in .gc-status (pbsfs's missing-chunks aside).
    let status: Value =
        serde_json::from_slice(&std::fs::read(store.join(".gc-status")).unwrap()).unwrap();
    let mut shown = v.clone();
    shown.as_object_mut().unwrap().remove("missing-chunks");
    assert_eq!(shown, status);
    // Nothing left to remove: json-pretty, same shape.
    let v = json_pair(&["gc", s(&store)], 0);
    assert_eq!(v["removed-chunks"], 0);

    // On a terminal: both phases drawn (the sweep walks all 65536 prefixes, made or
    // not), the JSON on stdout intact.
    let json = tmp.join("gc.json");
    let (tty, code) = on_terminal(&format!(
        "{BIN} gc {} --output-format json > {}",
        s(&store),
        s(&json)
    ));
    assert_eq!(code, 0, "{tty}");
    drew(&tty, "gc phase 1/2 (mark): index files");
    drew(&tty, "gc phase 2/2 (sweep): chunk folders");
    assert!(tty.contains("/65536"), "{tty:?}");
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        (v["index-file-count"].as_u64(), v["disk-chunks"].as_u64()),
        (Some(1), Some(4))
    );
}

/// Backup's summary as JSON, checked against the data backed up; restore's byte bar on
/// a terminal and its summary line, and nothing but the summary on a pipe.
#[test]
fn backup_json_and_restore_bar_and_summary() {
    let tmp = TempDir::new("progress-backup");
    let store = sparse_store(&tmp);
    let data = pseudo_random(5 * 4096, 9);
    let arg = image_source(&tmp, "disk.img", &data);
    let args = [
        "backup",
        s(&store),
        "vm/7",
        &arg,
        "--chunk-size",
        "4K",
        "--backup-time",
        "2024-02-01T00:00:00Z",
    ];
    let mut first = args.to_vec();
    first.extend(["--output-format", "json"]);
    let out = pbsfs(&first);
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    plain(&stderr(&out), "eta ");
    assert_eq!(
        (v["backup-type"].as_str(), v["backup-id"].as_str()),
        (Some("vm"), Some("7"))
    );
    assert_eq!(
        v["backup-time"].as_i64(),
        Some(pbsfs::util::time::parse_time_arg("2024-02-01T00:00:00Z").unwrap())
    );
    assert_eq!(v["size"], data.len());
    assert_eq!(
        [&v["chunk-count"], &v["chunk-new"], &v["chunk-reused"]],
        [5, 5, 0]
    );
    assert_eq!(v["size-new"], data.len());
    assert!(v["duration"].as_f64().unwrap() >= 0.0);
    // A second backup of the same data reuses every chunk (json-pretty).
    let mut again = args.to_vec();
    again[7] = "2024-02-02T00:00:00Z";
    again.extend(["--output-format", "json-pretty"]);
    let v = pretty_json(&ok(&pbsfs(&again)));
    assert_eq!([&v["chunk-new"], &v["chunk-reused"]], [0, 5], "{v}");

    let target = tmp.join("restored.img");
    let (tty, code) = on_terminal(&format!(
        "{BIN} restore {} vm/7/2024-02-01T00:00:00Z drive-scsi0.img {}",
        s(&store),
        s(&target)
    ));
    assert_eq!(code, 0, "{tty}");
    drew(&tty, "restore ");
    assert!(tty.contains("/20.00 KiB"), "a byte total: {tty:?}");
    assert!(
        tty.contains(&format!(
            "restored vm/7/2024-02-01T00:00:00Z/drive-scsi0.img.fidx to {}: 1 file, 20480 bytes",
            s(&target)
        )),
        "{tty:?}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let out = pbsfs(&[
        "restore",
        s(&store),
        "vm/7/latest",
        "drive-scsi0.img",
        s(&tmp.join("again.img")),
    ]);
    let text = ok(&out);
    assert_eq!(stderr(&out), "");
    assert!(
        text.starts_with("restored ") && text.lines().count() == 1,
        "{text}"
    );

    // A pxar restore does not know its byte total: a spinner with bytes, no "of".
    let tree = tmp.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a"), pseudo_random(64 * 1024, 10)).unwrap();
    let arg = format!("root.pxar:{}", s(&tree));
    ok(&pbsfs(&["backup", s(&store), "ct/8", &arg]));
    let into = tmp.join("into");
    let (tty, code) = on_terminal(&format!(
        "{BIN} restore {} ct/8/latest root.pxar {}",
        s(&store),
        s(&into)
    ));
    assert_eq!(code, 0, "{tty}");
    drew(&tty, "restore ");
    assert!(
        tty.contains(" 64.00 KiB ") && !tty.contains("/64.00 KiB"),
        "{tty:?}"
    );
    assert!(tty.contains(": 1 file, 65536 bytes"), "{tty:?}");
    assert_eq!(
        std::fs::read(into.join("a")).unwrap(),
        pseudo_random(64 * 1024, 10)
    );
}

/// A restore that fails midway on a terminal clears its bar before the error, which
/// then starts its own line (the bar lives in a static that is never dropped).
#[test]
fn a_failed_restore_clears_its_bar_before_the_error() {
    let tmp = TempDir::new("progress-fail");
    let store = sparse_store(&tmp);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/7",
        &pseudo_random(8 * 4096, 11),
        "2024-02-01T00:00:00Z",
    ));
    // The last chunk of the image (chunk files sort by digest: find it by content).
    let last = pseudo_random(8 * 4096, 11)[7 * 4096..].to_vec();
    let digest = pbsfs::Digest::of(&last).to_hex();
    let chunk = chunk_files(&store)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_str().unwrap() == digest)
        .expect("the last chunk's file");
    let mut raw = std::fs::read(&chunk).unwrap();
    let n = raw.len() - 1;
    raw[n] ^= 1;
    std::fs::write(&chunk, &raw).unwrap();
    let (tty, code) = on_terminal(&format!(
        "{BIN} restore {} vm/7/latest drive-scsi0.img {}",
        s(&store),
        s(&tmp.join("out.img"))
    ));
    assert_eq!(code, 2, "{tty:?}");
    drew(&tty, "restore ");
    let after_clear = tty.rsplit("\x1b[2K").next().unwrap();
    assert!(
        after_clear
            .trim_start_matches('\r')
            .starts_with("pbsfs: error:")
            && after_clear.contains(&digest),
        "the error follows a cleared line: {tty:?}"
    );
}
