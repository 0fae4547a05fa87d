//! The CLI's refusals: bad arguments exit 2 naming what is wrong, and a refused backup
//! leaves the store exactly as it was.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

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
    let arg = image_source(&tmp, "img", &pseudo_random(5000, 2));
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
    let arg = image_source(&tmp, "img", &pseudo_random(5000, 3));
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
    let arg = image_source(&tmp, "img", &pseudo_random(5000, 4));
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
    let arg = image_source(&tmp, "img", &data);
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
