//! The CLI end to end, run as a user scripts it: backup/cat round trips, incremental
//! reuse and its background validation, notes, listings, namespaces, block devices,
//! forget and restore.

use std::os::unix::fs::FileTypeExt;

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

#[test]
fn namespaces_nest_and_whole_store_commands_cover_them() {
    let tmp = TempDir::new("ns");
    let store = sparse_store(&tmp);
    let arg = image_source(&tmp, "img", &pseudo_random(10_000, 3));
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
