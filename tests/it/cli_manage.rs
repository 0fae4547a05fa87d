//! The CLI's store management end to end: prune rules (local days across DST, ISO
//! weeks, combined rules), gc, verify (--ignore-verified, worker ids), and the
//! messages that say what happened.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Create finished snapshots at `times` (epoch) in `vm/1`, oldest first.
fn make_snapshots(store: &Path, tmp: &TempDir, times: &[i64]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    for t in sorted {
        let out = backup_image(store, tmp, "vm/1", b"p", &t.to_string());
        assert!(out.status.success(), "backup at {t}: {}", describe(&out));
    }
}

fn prune(store: &Path, tz: &str, args: &[&str]) -> Vec<(String, String)> {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["prune", s(store), "vm/1"])
        .args(args)
        .env("TZ", tz);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "prune {args:?} (TZ={tz}): {}",
        describe(&out)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.rsplit_once(' ').unwrap();
            (a.trim_start_matches("vm/1/").to_string(), b.to_string())
        })
        .collect()
}

fn t(s: &str) -> i64 {
    pbsfs::util::time::parse_time_arg(s).unwrap()
}

/// A POSIX TZ rule for Central Europe: needs no time zone database.
const CET: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

#[test]
fn prune_keep_daily_uses_local_days_across_the_dst_change() {
    let tmp = TempDir::new("prune-dst");
    let store = sparse_store(&tmp);
    // 2024-10-27 is the autumn change in CET: 02:00-03:00 local happens twice.
    let times = [
        "2024-10-25T10:00:00Z", // local Oct 25
        "2024-10-26T10:00:00Z", // local Oct 26
        "2024-10-26T23:30:00Z", // local Oct 27 01:30 CEST (a UTC day earlier!)
        "2024-10-27T00:30:00Z", // local Oct 27 02:30 CEST
        "2024-10-27T01:30:00Z", // local Oct 27 02:30 CET
        "2024-10-27T22:30:00Z", // local Oct 27 23:30 CET
    ];
    make_snapshots(&store, &tmp, &times.map(t));
    let plan = prune(&store, CET, &["--keep-daily", "2", "--dry-run"]);
    let expect = [
        ("2024-10-27T22:30:00Z", "keep"),
        ("2024-10-27T01:30:00Z", "remove"),
        ("2024-10-27T00:30:00Z", "remove"),
        ("2024-10-26T23:30:00Z", "remove"),
        ("2024-10-26T10:00:00Z", "keep"),
        ("2024-10-25T10:00:00Z", "remove"),
    ];
    assert_eq!(plan, expect.map(|(a, b)| (a.to_string(), b.to_string())));
    // The named zone (tzdata) agrees with the POSIX rule.
    assert_eq!(
        prune(&store, "Europe/Vienna", &["--keep-daily", "2", "--dry-run"]),
        plan
    );
    // In UTC the same snapshots fall on other days: the rule really uses local time.
    let utc = prune(&store, "UTC", &["--keep-daily", "2", "--dry-run"]);
    assert_eq!(
        utc[3],
        ("2024-10-26T23:30:00Z".to_string(), "keep".to_string())
    );

    // Both 02:30s of the repeated hour are one local hour.
    let hourly = prune(&store, CET, &["--keep-hourly", "10", "--dry-run"]);
    assert_eq!(hourly[1].1, "keep");
    assert_eq!(
        hourly[2],
        ("2024-10-27T00:30:00Z".to_string(), "remove".to_string())
    );
    assert_eq!(snapshots_json(&store).len(), 6, "dry run removes nothing");

    let plan = prune(&store, CET, &["--keep-daily", "2"]);
    assert_eq!(plan.len(), 6);
    let left: Vec<String> = snapshots_json(&store)
        .iter()
        .map(|v| pbsfs::util::time::format_utc(v["backup-time"].as_i64().unwrap()).unwrap())
        .collect();
    assert_eq!(left, vec!["2024-10-26T10:00:00Z", "2024-10-27T22:30:00Z"]);
}

#[test]
fn prune_keep_weekly_uses_iso_week_years() {
    let tmp = TempDir::new("prune-iso");
    let store = sparse_store(&tmp);
    let times = [
        "2020-12-28T12:00:00Z", // Monday, 2020-W53
        "2021-01-03T12:00:00Z", // Sunday, 2020-W53
        "2021-01-04T12:00:00Z", // Monday, 2021-W01
        "2024-12-29T12:00:00Z", // Sunday, 2024-W52
        "2024-12-30T12:00:00Z", // Monday, 2025-W01 (calendar year 2024!)
        "2025-01-05T12:00:00Z", // Sunday, 2025-W01
    ];
    make_snapshots(&store, &tmp, &times.map(t));
    let plan = prune(&store, CET, &["--keep-weekly", "3", "--dry-run"]);
    let expect = [
        ("2025-01-05T12:00:00Z", "keep"),
        ("2024-12-30T12:00:00Z", "remove"),
        ("2024-12-29T12:00:00Z", "keep"),
        ("2021-01-04T12:00:00Z", "keep"),
        ("2021-01-03T12:00:00Z", "remove"),
        ("2020-12-28T12:00:00Z", "remove"),
    ];
    assert_eq!(plan, expect.map(|(a, b)| (a.to_string(), b.to_string())));
    let plan = prune(&store, CET, &["--keep-weekly", "4", "--dry-run"]);
    assert_eq!(
        plan[4],
        ("2021-01-03T12:00:00Z".to_string(), "keep".to_string())
    );
    assert_eq!(
        plan[5].1, "remove",
        "same ISO week as the 2021-01-03 snapshot"
    );
}

#[test]
fn prune_combines_rules_and_handles_unfinished_and_protected_snapshots() {
    let tmp = TempDir::new("prune-mix");
    let store = sparse_store(&tmp);
    // keep-last=1 with keep-daily=2: the newest, plus the newest of two earlier days.
    let day = |d: u32, h: u32| t(&format!("2024-03-0{d}T{h:02}:00:00Z"));
    make_snapshots(
        &store,
        &tmp,
        &[
            day(1, 8),
            day(1, 20),
            day(2, 8),
            day(2, 20),
            day(3, 8),
            day(3, 20),
        ],
    );
    let plan = prune(
        &store,
        "UTC",
        &["--keep-last", "1", "--keep-daily", "2", "--dry-run"],
    );
    let marks: Vec<&str> = plan.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        marks,
        ["keep", "remove", "keep", "remove", "keep", "remove"]
    );
    // No option at all keeps everything.
    let plan = prune(&store, "UTC", &[]);
    assert_eq!(plan.len(), 6, "{plan:?}");
    assert!(plan.iter().all(|(_, m)| m == "keep"), "{plan:?}");
    assert_eq!(snapshots_json(&store).len(), 6);

    let tmp2 = TempDir::new("prune-partial");
    let store = sparse_store(&tmp2);
    make_snapshots(
        &store,
        &tmp2,
        &[
            t("2024-01-01T00:00:00Z"),
            t("2024-01-02T00:00:00Z"),
            t("2024-01-04T00:00:00Z"),
        ],
    );
    pbsfs_ok(&["protected", s(&store), "vm/1/2024-01-02T00:00:00Z", "on"]);
    std::fs::create_dir(store.join("vm/1/2024-01-03T00:00:00Z")).unwrap(); // unfinished, not newest
    std::fs::create_dir(store.join("vm/1/2024-01-05T00:00:00Z")).unwrap(); // unfinished, newest
    let plan = prune(&store, "UTC", &["--keep-last", "1"]);
    let expect = [
        ("2024-01-05T00:00:00Z", "keep-partial"),
        ("2024-01-04T00:00:00Z", "keep"),
        ("2024-01-03T00:00:00Z", "remove"),
        ("2024-01-02T00:00:00Z", "protected"),
        ("2024-01-01T00:00:00Z", "remove"),
    ];
    assert_eq!(plan, expect.map(|(a, b)| (a.to_string(), b.to_string())));
    let mut left: Vec<String> = std::fs::read_dir(store.join("vm/1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("2024"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "2024-01-02T00:00:00Z",
            "2024-01-04T00:00:00Z",
            "2024-01-05T00:00:00Z"
        ]
    );
}

#[test]
fn gc_removes_exactly_the_unreferenced_chunks_older_than_the_cutoff() {
    let tmp = TempDir::new("gc");
    let store = sparse_store(&tmp);
    let keep = pseudo_random(6 * 4096, 21);
    let gone = pseudo_random(5 * 4096, 22);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        &keep,
        "2024-01-01T00:00:00Z",
    ));
    let referenced = chunk_files(&store);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/2",
        &gone,
        "2024-01-01T00:00:00Z",
    ));
    let all = chunk_files(&store);
    let unreferenced: Vec<_> = all
        .iter()
        .filter(|p| !referenced.contains(p))
        .cloned()
        .collect();
    assert_eq!(unreferenced.len(), 5);
    pbsfs_ok(&["forget", s(&store), "vm/2/latest"]);
    // Everything looks two days old; one unreferenced chunk was used an hour ago.
    let old = pbsfs::util::time::now() - 2 * 86_400;
    for p in &all {
        pbsfs::util::sys::set_atime(p, old).unwrap();
    }
    pbsfs::util::sys::set_atime(&unreferenced[0], pbsfs::util::time::now() - 3600).unwrap();

    let out = pbsfs_ok(&["gc", s(&store)]);
    assert!(out.contains("removed: 4 chunks"), "{out}");
    assert!(out.contains("pending: 1 chunk,"), "{out}");
    let left = chunk_files(&store);
    let mut expect: Vec<_> = referenced.clone();
    expect.push(unreferenced[0].clone());
    expect.sort();
    assert_eq!(left, expect);
    assert_eq!(
        ok_bytes(pbsfs(&["cat", s(&store), "vm/1/latest", "drive-scsi0.img"])),
        keep
    );
    let status: Value =
        serde_json::from_slice(&std::fs::read(store.join(".gc-status")).unwrap()).unwrap();
    assert_eq!(status["removed-chunks"], 4);
    assert_eq!(status["index-file-count"], 1);
    assert!(status["upid"]
        .as_str()
        .unwrap()
        .contains(":garbage_collection:"));

    // With no cutoff the last unreferenced chunk goes too; referenced ones stay.
    let out = pbsfs_ok(&["gc", s(&store), "--atime-cutoff", "0"]);
    assert!(out.contains("removed: 1 chunk,"), "{out}");
    assert_eq!(chunk_files(&store), referenced);
    pbsfs_ok(&["verify", s(&store)]);
}

#[test]
fn verify_ignore_verified_and_outdated_after() {
    let tmp = TempDir::new("ignore");
    let store = sparse_store(&tmp);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        b"abc",
        "2024-01-01T00:00:00Z",
    ));
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        b"abd",
        "2024-01-02T00:00:00Z",
    ));
    pbsfs_ok(&["verify", s(&store), "vm/1/2024-01-01T00:00:00Z"]);
    let out = pbsfs_ok(&["verify", s(&store), "vm/1", "--ignore-verified"]);
    assert!(
        out.contains("2024-01-01T00:00:00Z: skipped") && out.contains("2024-01-02T00:00:00Z: ok"),
        "{out}"
    );
    // A state 3 days old is outdated after 2 days, not after 5.
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let d = pbsfs::store::format::names::BackupDir::parse(
        &Default::default(),
        "vm/1/2024-01-01T00:00:00Z",
    )
    .unwrap();
    let mut upid = pbsfs::util::upid::Upid::new("verify_snapshot", "x", "root@pam");
    upid.starttime -= 3 * 86_400;
    ds.update_manifest(&d, |u| {
        u.insert(
            "verify_state".into(),
            serde_json::json!({"state": "ok", "upid": upid.to_string()}),
        );
        Ok(())
    })
    .unwrap();
    let out = pbsfs_ok(&[
        "verify",
        s(&store),
        "vm/1/2024-01-01T00:00:00Z",
        "--ignore-verified",
        "--outdated-after",
        "5",
    ]);
    assert!(out.contains("skipped"), "{out}");
    let out = pbsfs_ok(&[
        "verify",
        s(&store),
        "vm/1/2024-01-01T00:00:00Z",
        "--ignore-verified",
        "--outdated-after",
        "2",
    ]);
    assert!(out.contains(": ok"), "{out}");
}

/// The verify worker id is PBS's (spec §11.1): the namespace as its on-disk path, `/` for
/// the root. Before the fix it was built in two places, neither PBS's.
#[test]
fn verify_records_pbs_worker_ids_in_the_root_and_in_a_namespace() {
    let tmp = TempDir::new("cli-worker-id");
    let store = sparse_store(&tmp);
    let arg = image_source(&tmp, "img", &pseudo_random(10_000, 3));
    let t = "2024-05-02T08:11:33Z";
    for ns in ["", "a/b"] {
        let mut args = vec!["backup", s(&store), "vm/100", &arg, "--backup-time", t];
        if !ns.is_empty() {
            std::fs::create_dir_all(store.join("ns/a/ns/b")).unwrap();
            args.extend(["--ns", ns]);
        }
        ok(&pbsfs(&args));
        let mut args = vec!["verify", s(&store), "vm/100/2024-05-02T08:11:33Z"];
        if !ns.is_empty() {
            args.extend(["--ns", ns]);
        }
        ok(&pbsfs(&args));
    }
    let upid = |ns: &str| -> String {
        let mut args = vec!["snapshots", s(&store), "--output-format", "json"];
        if !ns.is_empty() {
            args.extend(["--ns", ns]);
        }
        let v: Value = serde_json::from_str(&ok(&pbsfs(&args))).unwrap();
        v[0]["verification"]["upid"].as_str().unwrap().to_string()
    };
    // 2024-05-02T08:11:33Z = 0x66334AB5; ':' and '/' systemd-escaped as in PBS.
    let root = upid("");
    assert!(
        root.contains(":verify_snapshot:store\\x3a-vm-100-66334AB5:"),
        "{root}"
    );
    let nested = upid("a/b");
    assert!(
        nested.contains(":verify_snapshot:store\\x3ans-a-ns-b-vm-100-66334AB5:"),
        "{nested}"
    );
}

/// The messages issue 13 names: a prune without keep options says it can remove
/// nothing, `--outdated-after` without `--ignore-verified` is refused naming both, and
/// counts of one are singular.
#[test]
fn messages_say_what_happens_in_the_singular_where_one() {
    let dir = TempDir::new("cli-messages");
    let store = sparse_store(&dir);
    ok(&backup_image(
        &store,
        &dir,
        "vm/100",
        &[7u8; 4096],
        "2024-05-02T08:11:33Z",
    ));
    ok(&backup_image(
        &store,
        &dir,
        "vm/100",
        &[8u8; 4096],
        "2024-05-03T08:11:33Z",
    ));
    let out = pbsfs(&["prune", s(&store), "vm/100"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        err.contains("no --keep-* option") && err.contains("nothing can be removed"),
        "{err}"
    );
    assert_eq!(snapshots_json(&store).len(), 2);
    let out = pbsfs(&["prune", s(&store), "vm/100", "--keep-last", "1"]);
    assert!(
        !stderr(&out).contains("no --keep-* option"),
        "{}",
        describe(&out)
    );
    assert_eq!(snapshots_json(&store).len(), 1);

    let err = fails_with(&pbsfs(&["verify", s(&store), "--outdated-after", "30"]), 2);
    assert!(
        err.contains("--ignore-verified") && err.contains("--outdated-after"),
        "{err}"
    );
    let out = ok(&pbsfs(&[
        "verify",
        s(&store),
        "--ignore-verified",
        "--outdated-after",
        "30",
    ]));
    assert!(out.contains("verified 1 snapshot: 1 ok"), "{out}");
    assert!(out.contains("; 1 chunk checked, 0 bad"), "{out}");
    let gc = ok(&pbsfs(&["gc", s(&store), "--atime-cutoff", "0"]));
    // The forgotten snapshot's chunk is removed, or pending when touched within the
    // cutoff's second: one chunk either way.
    assert!(
        gc.contains("removed: 1 chunk, ") || gc.contains("pending: 1 chunk, "),
        "{gc}"
    );
    assert!(gc.contains("index files: 1 ("), "{gc}");
}
