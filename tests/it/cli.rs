//! The CLI end to end, run as a user scripts it: backup/cat round trips, incremental
//! reuse and its background validation, notes, listings, prune rules, forget, gc.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

#[test]
fn backup_then_cat_gives_back_the_source_bytes_at_every_size() {
    let tmp = TempDir::new("roundtrip");
    let store = sparse_store(&tmp);
    // Size 0 is refused (an empty .fidx stops PBS's GC): see
    // `an_empty_image_is_refused_and_nothing_is_created`.
    for (i, len) in [1usize, 4095, 4096, 4097, 3 * 4096 + 100]
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(len, i as u64 + 10);
        let group = format!("vm/{}", 100 + i);
        let out = backup_image(&store, &tmp, &group, &data, "2024-05-02T08:11:33Z");
        assert!(out.status.success(), "size {len}: {}", describe(&out));
        let out = pbsfs(&[
            "cat",
            s(&store),
            &format!("{group}/latest"),
            "drive-scsi0.img",
        ]);
        assert!(out.status.success(), "size {len}: {}", describe(&out));
        assert_eq!(out.stdout, data, "size {len}");
        // The index name works too.
        let out = pbsfs(&[
            "cat",
            s(&store),
            &format!("{group}/2024-05-02T08:11:33Z"),
            "drive-scsi0.img.fidx",
        ]);
        assert!(out.status.success(), "size {len}: {}", describe(&out));
        assert_eq!(out.stdout, data, "size {len}, by index name");
    }
    // A blob: arbitrary bytes, not only text.
    let conf = tmp.join("conf");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::write(&conf, &bytes).unwrap();
    pbsfs_ok(&[
        "backup",
        s(&store),
        "ct/9",
        &format!("pct.conf:{}", s(&conf)),
    ]);
    let out = pbsfs(&["cat", s(&store), "ct/9/latest", "pct.conf"]);
    assert_eq!(ok_bytes(out), bytes);
    let out = pbsfs(&["cat", s(&store), "ct/9/latest", "nope.img"]);
    let err = fails_with(&out, 2);
    assert!(
        err.contains("nope.img") && err.contains("pct.conf.blob"),
        "{err}"
    );
}

#[test]
fn an_unchanged_image_backs_up_with_no_new_chunk_file() {
    let tmp = TempDir::new("reuse");
    let store = sparse_store(&tmp);
    let data = pseudo_random(20 * 4096 + 5, 7);
    let out = backup_image(&store, &tmp, "vm/100", &data, "2024-05-02T08:00:00Z");
    let line = ok(&out);
    assert!(line.contains("21 chunks, 21 new, 0 reused"), "{line}");
    let before = chunk_files(&store);
    assert_eq!(before.len(), 21);
    let out = backup_image(&store, &tmp, "vm/100", &data, "2024-05-02T09:00:00Z");
    let line = ok(&out);
    assert!(line.contains("21 chunks, 0 new, 21 reused"), "{line}");
    assert_eq!(chunk_files(&store), before, "no chunk file written");
    let snaps = snapshots_json(&store);
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["files"][0]["size"], data.len() as u64);
    // Upload stats of the incremental run: nothing uploaded.
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let d = pbsfs::store::format::names::BackupDir::parse(
        &Default::default(),
        "vm/100/2024-05-02T09:00:00Z",
    )
    .unwrap();
    assert_eq!(
        ds.load_manifest(&d).unwrap().unprotected()["chunk_upload_stats"]["count"],
        0
    );
    // A time at or before the newest snapshot is refused.
    let out = backup_image(&store, &tmp, "vm/100", &data, "2024-05-02T09:00:00Z");
    let err = fails_with(&out, 2);
    assert!(err.contains("not newer"), "{err}");
}

#[test]
fn a_missing_reused_chunk_fails_the_backup_marks_the_base_and_the_next_run_heals() {
    let tmp = TempDir::new("heal");
    let store = sparse_store(&tmp);
    let data = pseudo_random(8 * 4096, 8);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/100",
        &data,
        "2024-05-02T08:00:00Z",
    ));
    let victim = chunk_files(&store)[3].clone();
    let digest = victim.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_file(&victim).unwrap();

    let out = backup_image(&store, &tmp, "vm/100", &data, "2024-05-02T09:00:00Z");
    let err = fails_with(&out, 2);
    assert!(
        err.contains(&digest) && err.contains("marked as failed"),
        "{err}"
    );
    let snaps = snapshots_json(&store);
    assert_eq!(
        snaps.len(),
        1,
        "no new snapshot, finished or not: {snaps:?}"
    );
    assert_eq!(snaps[0]["verification"]["state"], "failed");
    assert!(!store.join("vm/100/2024-05-02T09:00:00Z").exists());

    ok(&backup_image(
        &store,
        &tmp,
        "vm/100",
        &data,
        "2024-05-02T10:00:00Z",
    ));
    assert!(
        victim.exists(),
        "the failed base is not reused, so the chunk is written again"
    );
    ok(&pbsfs(&["verify", s(&store)]));
    for snap in snapshots_json(&store) {
        assert_eq!(snap["verification"]["state"], "ok");
    }
}

#[test]
fn notes_are_byte_exact_and_cleared_to_an_empty_string() {
    let tmp = TempDir::new("notes");
    let store = sparse_store(&tmp);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        b"x",
        "2024-01-01T00:00:00Z",
    ));
    let text = "first line\n\n  trailing spaces  \nno newline at end";
    pbsfs_ok(&["notes", s(&store), "vm/1/latest", "--set", text]);
    assert_eq!(
        pbsfs_ok(&["notes", s(&store), "vm/1/2024-01-01T00:00:00Z"]),
        text
    );
    let f = tmp.join("n");
    std::fs::write(&f, "from a file\n").unwrap();
    pbsfs_ok(&["notes", s(&store), "vm/1/latest", "--set-file", s(&f)]);
    assert_eq!(
        pbsfs_ok(&["notes", s(&store), "vm/1/latest"]),
        "from a file\n"
    );
    let snaps = snapshots_json(&store);
    assert_eq!(snaps[0]["comment"], "from a file");
    pbsfs_ok(&["notes", s(&store), "vm/1/latest", "--set", ""]);
    assert_eq!(pbsfs_ok(&["notes", s(&store), "vm/1/latest"]), "");
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let d = pbsfs::store::format::names::BackupDir::parse(
        &Default::default(),
        "vm/1/2024-01-01T00:00:00Z",
    )
    .unwrap();
    assert_eq!(
        ds.load_manifest(&d).unwrap().unprotected()["notes"],
        "",
        "cleared notes are an empty string"
    );
    // Invalid content changes nothing and says why.
    let before = std::fs::read(store.join("vm/1/2024-01-01T00:00:00Z/index.json.blob")).unwrap();
    std::fs::write(&f, [b'a', 0xff, b'b']).unwrap();
    let out = pbsfs(&["notes", s(&store), "vm/1/latest", "--set-file", s(&f)]);
    let err = fails_with(&out, 2);
    assert!(err.contains("UTF-8"), "{err}");
    std::fs::write(&f, vec![b'a'; 1024 * 1024 + 1]).unwrap();
    let out = pbsfs(&["notes", s(&store), "vm/1/latest", "--set-file", s(&f)]);
    let err = fails_with(&out, 2);
    assert!(err.contains("limit"), "{err}");
    assert_eq!(
        std::fs::read(store.join("vm/1/2024-01-01T00:00:00Z/index.json.blob")).unwrap(),
        before
    );
    // Group notes.
    pbsfs_ok(&["notes", s(&store), "vm/1", "--set", "group\nnotes"]);
    assert_eq!(pbsfs_ok(&["notes", s(&store), "vm/1"]), "group\nnotes");
    assert_eq!(
        std::fs::read_to_string(store.join("vm/1/notes")).unwrap(),
        "group\nnotes"
    );
    let groups: Value =
        serde_json::from_str(&pbsfs_ok(&["groups", s(&store), "--output-format", "json"])).unwrap();
    assert_eq!(groups[0]["comment"], "group");
    assert_eq!(groups[0]["owner"], "root@pam");
    assert_eq!(groups[0]["backup-count"], 1);
}

#[test]
fn listings_use_pbs_field_names_and_show_unfinished_only_with_all() {
    let tmp = TempDir::new("list");
    let store = sparse_store(&tmp);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/1",
        b"abc",
        "2024-01-01T00:00:00Z",
    ));
    std::fs::create_dir(store.join("vm/1/2024-01-02T00:00:00Z")).unwrap();
    let out = pbsfs_ok(&["snapshots", s(&store), "--output-format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let snap = &v[0];
    for key in [
        "backup-type",
        "backup-id",
        "backup-time",
        "files",
        "size",
        "protected",
    ] {
        assert!(snap.get(key).is_some(), "{key} missing in {snap}");
    }
    assert_eq!(snap["backup-time"], 1_704_067_200);
    assert_eq!(snapshots_json(&store).len(), 2);
    let text = pbsfs_ok(&["snapshots", s(&store), "--all"]);
    assert!(
        text.contains("vm/1/2024-01-02T00:00:00Z") && text.contains("unfinished"),
        "{text}"
    );
    let out = pbsfs(&["snapshots", s(&store), "vm/2"]);
    let err = fails_with(&out, 2);
    assert!(err.contains("vm/2"), "{err}");
}

#[test]
fn forget_removes_a_snapshot_and_refuses_protected_ones() {
    let tmp = TempDir::new("forget");
    let store = sparse_store(&tmp);
    for t in ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"] {
        ok(&backup_image(&store, &tmp, "vm/1", b"abc", t));
    }
    pbsfs_ok(&["protected", s(&store), "vm/1/2024-01-01T00:00:00Z", "on"]);
    assert_eq!(
        pbsfs_ok(&["protected", s(&store), "vm/1/2024-01-01T00:00:00Z"]).trim(),
        "on"
    );
    let out = pbsfs(&["forget", s(&store), "vm/1/2024-01-01T00:00:00Z"]);
    let err = fails_with(&out, 2);
    assert!(err.contains("protected"), "{err}");
    assert!(store
        .join("vm/1/2024-01-01T00:00:00Z/index.json.blob")
        .exists());
    pbsfs_ok(&["forget", s(&store), "vm/1/latest"]);
    assert!(!store.join("vm/1/2024-01-02T00:00:00Z").exists());
    pbsfs_ok(&["protected", s(&store), "vm/1/latest", "off"]);
    pbsfs_ok(&["forget", s(&store), "vm/1/2024-01-01T00:00:00Z"]);
    assert!(!store.join("vm/1").exists(), "an emptied group is removed");
    let out = pbsfs(&["forget", s(&store), "vm/1/2024-01-01T00:00:00Z"]);
    let err = fails_with(&out, 2);
    assert!(err.contains("vm/1"), "{err}");
}

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
fn bad_arguments_exit_2_and_name_what_is_wrong() {
    let tmp = TempDir::new("args");
    let store = sparse_store(&tmp);
    for (args, needle) in [
        (
            vec!["snapshots", "/nonexistent/store"],
            "/nonexistent/store",
        ),
        (
            vec!["notes", s(&store), "vm/../x/2024-01-01T00:00:00Z"],
            "..",
        ),
        (vec!["cat", s(&store), "xx/1/latest", "a.img"], "xx"),
        (
            vec!["backup", s(&store), "vm/1", "disk.qcow2:/dev/null"],
            "disk.qcow2",
        ),
        (
            vec!["backup", s(&store), "vm/1", "d.img:/nonexistent/src"],
            "/nonexistent/src",
        ),
        (vec!["notes", s(&store), "vm/1/latest"], "vm/1"),
        (
            vec!["verify", s(&store), "vm/1/2024-13-01T00:00:00Z"],
            "2024-13-01",
        ),
    ] {
        let out = pbsfs(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert!(
        snapshots_json(&store).is_empty(),
        "a failed backup leaves no snapshot"
    );
    assert!(
        !store.join("vm/1").exists(),
        "nor a group it would have created"
    );
    // A source that fails only when read (sysfs claims 4096 bytes, returns fewer): the
    // run fails after creating the group, and removes it again.
    let short = "/sys/kernel/uevent_seqnum";
    assert_eq!(std::fs::metadata(short).unwrap().len(), 4096);
    let out = pbsfs(&["backup", s(&store), "vm/2", &format!("d.img:{short}")]);
    let err = fails_with(&out, 2);
    assert!(err.contains(short), "{err}");
    assert!(
        !store.join("vm/2").exists(),
        "the group this run created is gone"
    );
    assert!(!store.join(".locks/vm-2").exists(), "and its lock file");
}

#[test]
fn namespaces_nest_and_whole_store_commands_cover_them() {
    let tmp = TempDir::new("ns");
    let store = sparse_store(&tmp);
    let src = tmp.join("img");
    std::fs::write(&src, pseudo_random(10_000, 3)).unwrap();
    let arg = format!("drive-scsi0.img:{}", s(&src));
    pbsfs_ok(&[
        "backup",
        s(&store),
        "vm/7",
        &arg,
        "--ns",
        "a/b",
        "--create-ns",
        "--chunk-size",
        "4K",
    ]);
    pbsfs_ok(&["backup", s(&store), "vm/7", &arg, "--chunk-size", "4K"]);
    assert!(store.join("ns/a/ns/b/vm/7").is_dir());
    let in_ns: Value = serde_json::from_str(&pbsfs_ok(&[
        "snapshots",
        s(&store),
        "--ns",
        "a/b",
        "--output-format",
        "json",
    ]))
    .unwrap();
    assert_eq!(in_ns.as_array().unwrap().len(), 1);
    let root: Value = serde_json::from_str(&pbsfs_ok(&[
        "snapshots",
        s(&store),
        "--output-format",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        root.as_array().unwrap().len(),
        1,
        "without --ns only the root namespace"
    );
    let out = pbsfs(&[
        "cat",
        s(&store),
        "vm/7/latest",
        "drive-scsi0.img",
        "--ns",
        "a/b",
    ]);
    assert_eq!(ok_bytes(out), pseudo_random(10_000, 3));
    let out = pbsfs_ok(&["verify", s(&store)]);
    assert!(
        out.contains("verified 2 snapshots"),
        "verify STORE covers every namespace: {out}"
    );
    for bad in ["a/../b", "a//b/c/d/e/f/g/h/i", ".hidden"] {
        let o = pbsfs(&["snapshots", s(&store), "--ns", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", describe(&o));
    }
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

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn a_block_device_backs_up_like_a_file() {
    let tmp = TempDir::new("blockdev");
    let store = sparse_store(&tmp);
    let img = tmp.join("disk.raw");
    let data = pseudo_random(3 * 65536 + 512, 31);
    std::fs::write(&img, &data).unwrap();
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show", s(&img)])
        .output()
        .unwrap();
    let dev = Loop(ok(&out).trim().to_string());
    assert!(std::fs::metadata(&dev.0)
        .unwrap()
        .file_type()
        .is_block_device());
    pbsfs_ok(&[
        "backup",
        s(&store),
        "vm/9",
        &format!("drive-scsi0.img:{}", dev.0),
        "--chunk-size",
        "64K",
    ]);
    let snaps = snapshots_json(&store);
    assert_eq!(snaps[0]["files"][0]["size"], data.len() as u64);
    assert_eq!(
        ok_bytes(pbsfs(&["cat", s(&store), "vm/9/latest", "drive-scsi0.img"])),
        data
    );
    // A character device is not an image.
    let out = pbsfs(&["backup", s(&store), "vm/9", "drive-scsi0.img:/dev/null"]);
    let err = fails_with(&out, 2);
    assert!(
        err.contains("/dev/null") && err.contains("block devices"),
        "{err}"
    );
}

/// The verify worker id is PBS's (spec §11.1): the namespace as its on-disk path, `/` for
/// the root. Before the fix it was built in two places, neither PBS's.
#[test]
fn verify_records_pbs_worker_ids_in_the_root_and_in_a_namespace() {
    let tmp = TempDir::new("cli-worker-id");
    let store = sparse_store(&tmp);
    let src = tmp.join("img");
    std::fs::write(&src, pseudo_random(10_000, 3)).unwrap();
    let arg = format!("drive-scsi0.img:{}", s(&src));
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

/// Every entry below `root` (the store, `.chunks` and `.locks` included) with its type,
/// size, mode and mtime: a refused command must leave this unchanged (spec §11.9: nothing
/// is created when a backup is refused, not even a folder removed again).
fn store_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let md = std::fs::symlink_metadata(dir).unwrap();
        let rel = dir.strip_prefix(root).unwrap().display().to_string();
        out.push(format!(
            "{rel} {:o} {} {}.{}",
            md.mode(),
            md.len(),
            md.mtime(),
            md.mtime_nsec()
        ));
        if md.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for p in names {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn an_empty_image_is_refused_and_nothing_is_created() {
    let tmp = TempDir::new("cli-empty-image");
    let store = sparse_store(&tmp);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/100",
        &pseudo_random(5000, 1),
        "2024-05-02T08:11:33Z",
    ));
    let empty = tmp.join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    let conf = tmp.join("conf");
    std::fs::write(&conf, b"memory: 512\n").unwrap();
    let before = store_listing(&store);
    // A new group and an existing one; the image alone and next to a valid blob.
    for group in ["vm/200", "vm/100"] {
        for with_conf in [false, true] {
            let mut args = vec![
                "backup".to_string(),
                s(&store).to_string(),
                group.to_string(),
                format!("drive-scsi0.img:{}", s(&empty)),
                "--backup-time".to_string(),
                "2024-05-03T08:11:33Z".to_string(),
            ];
            if with_conf {
                args.push(format!("qemu-server.conf:{}", s(&conf)));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let err = fails_with(&pbsfs(&args), 2);
            assert!(
                err.contains("drive-scsi0.img") && err.contains(s(&empty)),
                "names the source: {err}"
            );
            assert!(
                err.contains("empty (0 bytes)") && err.contains("garbage collection"),
                "says why: {err}"
            );
            assert_eq!(store_listing(&store), before, "{group} {with_conf}: {err}");
        }
    }
    assert!(!store.join("vm/200").exists());
    assert_eq!(snapshots_json(&store).len(), 1);
}

#[test]
fn a_backup_time_below_one_is_refused_and_one_is_accepted() {
    let tmp = TempDir::new("cli-time-zero");
    let store = sparse_store(&tmp);
    let src = tmp.join("img");
    std::fs::write(&src, pseudo_random(5000, 2)).unwrap();
    let arg = format!("drive-scsi0.img:{}", s(&src));
    let before = store_listing(&store);
    for t in ["0", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z"] {
        let out = pbsfs(&["backup", s(&store), "vm/1", &arg, "--backup-time", t]);
        let err = fails_with(&out, 2);
        assert!(
            err.contains("backup time") && err.contains("at least 1"),
            "{t}: {err}"
        );
        assert_eq!(store_listing(&store), before, "{t}: nothing created");
    }
    // The first valid time.
    let out = ok(&pbsfs(&[
        "backup",
        s(&store),
        "vm/1",
        &arg,
        "--backup-time",
        "1",
    ]));
    assert!(out.contains("vm/1/1970-01-01T00:00:01Z"), "{out}");
    let snaps = snapshots_json(&store);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["backup-time"], 1, "{snaps:?}");
}

#[test]
fn a_namespace_component_over_255_bytes_is_refused() {
    let tmp = TempDir::new("cli-ns-len");
    let store = sparse_store(&tmp);
    let src = tmp.join("img");
    std::fs::write(&src, pseudo_random(5000, 3)).unwrap();
    let arg = format!("drive-scsi0.img:{}", s(&src));
    let before = store_listing(&store);
    let long = "n".repeat(256);
    let nested = format!("a/{}", "n".repeat(254));
    for ns in [long.as_str(), nested.as_str()] {
        let out = pbsfs(&["backup", s(&store), "vm/1", &arg, "--ns", ns, "--create-ns"]);
        let err = fails_with(&out, 2);
        assert!(
            err.contains(&format!("namespace '{ns}'")),
            "names it: {err}"
        );
        assert!(err.contains("at most 255 bytes"), "says why: {err}");
        assert_eq!(store_listing(&store), before, "nothing created");
        // Every command reading a namespace refuses it the same way.
        let err = fails_with(&pbsfs(&["snapshots", s(&store), "--ns", ns]), 2);
        assert!(err.contains("at most 255 bytes"), "{err}");
    }
    // 255 bytes is PBS's limit, and allowed.
    let ok_ns = "n".repeat(255);
    ok(&pbsfs(&[
        "backup",
        s(&store),
        "vm/1",
        &arg,
        "--ns",
        &ok_ns,
        "--create-ns",
    ]));
    assert!(store.join("ns").join(&ok_ns).join("vm/1").is_dir());
}

#[test]
fn a_backup_into_a_missing_namespace_is_refused_unless_create_ns() {
    let tmp = TempDir::new("cli-ns-typo");
    let store = sparse_store(&tmp);
    let src = tmp.join("img");
    std::fs::write(&src, pseudo_random(5000, 4)).unwrap();
    let arg = format!("drive-scsi0.img:{}", s(&src));
    // An existing namespace (as PBS creates one: an empty folder) takes backups.
    std::fs::create_dir_all(store.join("ns/prod")).unwrap();
    ok(&pbsfs(&["backup", s(&store), "vm/1", &arg, "--ns", "prod"]));
    let before = store_listing(&store);
    for typo in ["prdo", "prod/sub", "prdo/sub"] {
        let out = pbsfs(&["backup", s(&store), "vm/1", &arg, "--ns", typo]);
        let err = fails_with(&out, 2);
        assert!(
            err.contains(&format!("namespace '{typo}' does not exist")),
            "names it: {err}"
        );
        assert!(err.contains("--create-ns"), "says how: {err}");
        assert_eq!(store_listing(&store), before, "{typo}: nothing created");
    }
    let out = pbsfs(&[
        "backup",
        s(&store),
        "vm/1",
        &arg,
        "--ns",
        "prdo/sub",
        "--create-ns",
    ]);
    ok(&out);
    assert!(store.join("ns/prdo/ns/sub/vm/1").is_dir());
    let listed: Value = serde_json::from_str(&pbsfs_ok(&[
        "snapshots",
        s(&store),
        "--ns",
        "prdo/sub",
        "--output-format",
        "json",
    ]))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // Into an existing namespace --create-ns changes nothing, and the root needs none.
    ok(&pbsfs(&[
        "backup",
        s(&store),
        "vm/2",
        &arg,
        "--ns",
        "prod",
        "--create-ns",
    ]));
    ok(&pbsfs(&["backup", s(&store), "vm/3", &arg]));
    assert_eq!(snapshots_json(&store).len(), 1, "the root's own snapshot");
}

#[test]
fn a_chunk_size_below_64k_is_accepted_with_a_warning() {
    let tmp = TempDir::new("cli-small-chunks");
    let store = sparse_store(&tmp);
    let data = pseudo_random(200_000, 5);
    let src = tmp.join("img");
    std::fs::write(&src, &data).unwrap();
    let arg = format!("drive-scsi0.img:{}", s(&src));
    let warning = "the PBS client never writes chunks this small";
    for (i, (size, warned)) in [("4K", true), ("32K", true), ("64K", false), ("4M", false)]
        .into_iter()
        .enumerate()
    {
        let group = format!("vm/{}", 10 + i);
        let out = pbsfs(&["backup", s(&store), &group, &arg, "--chunk-size", size]);
        ok(&out);
        let err = stderr(&out);
        assert_eq!(err.contains(warning), warned, "{size}: {err}");
        if warned {
            assert!(err.contains("WARN") && err.contains("below 64K"), "{err}");
        }
        let out = pbsfs(&[
            "cat",
            s(&store),
            &format!("{group}/latest"),
            "drive-scsi0.img",
        ]);
        assert_eq!(ok_bytes(out), data, "{size}");
    }
    // Without --chunk-size: the default 4M, no warning.
    let out = pbsfs(&["backup", s(&store), "vm/20", &arg]);
    ok(&out);
    assert!(!stderr(&out).contains(warning), "{}", stderr(&out));
}

#[test]
fn restore_writes_an_image_back_sparse_and_refuses_to_overwrite_without_asking() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TempDir::new("restore-img");
    let store = sparse_store(&tmp);
    let mut data = vec![0u8; 512 * 1024];
    data[1000..9000].copy_from_slice(&pseudo_random(8000, 4));
    data[300_000..300_010].fill(1);
    ok(&backup_image(
        &store,
        &tmp,
        "vm/100",
        &data,
        "2024-05-02T08:11:33Z",
    ));
    let target = tmp.join("disk.raw");
    let out = ok(&pbsfs(&[
        "restore",
        s(&store),
        "vm/100/latest",
        "drive-scsi0.img",
        s(&target),
    ]));
    assert!(
        out.contains("restored") && out.contains(": 1 file,"),
        "{out}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), data);
    let md = std::fs::metadata(&target).unwrap();
    assert!(
        md.blocks() * 512 < data.len() as u64 / 2,
        "zero runs not left as holes: {} blocks",
        md.blocks()
    );
    let args = [
        "restore",
        s(&store),
        "vm/100/latest",
        "drive-scsi0.img",
        s(&target),
    ];
    let err = fails_with(&pbsfs(&args), 2);
    assert!(err.contains("--overwrite"), "{err}");
    std::fs::write(&target, b"other").unwrap();
    let mut with = args.to_vec();
    with.push("--overwrite");
    ok(&pbsfs(&with));
    assert_eq!(std::fs::read(&target).unwrap(), data);
    // A corrupt chunk fails the restore naming it.
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let idx = ds
        .read_index(&store.join("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img.fidx"))
        .unwrap();
    let digest = idx.chunk_info(0).unwrap().digest;
    let chunk = ds.chunk_store().chunk_path(&digest);
    let mut raw = std::fs::read(&chunk).unwrap();
    let n = raw.len() - 1;
    raw[n] ^= 1;
    std::fs::write(&chunk, &raw).unwrap();
    let err = fails_with(&pbsfs(&with), 2);
    assert!(err.contains(&digest.to_hex()), "{err}");
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
