//! `pbsfs find` on three snapshots of two groups (and one in a namespace): by name, by
//! path, ignoring case, grep's exit codes, JSON; a damaged catalog reported while the
//! search goes on; archives whose every chunk is corrupt never read.

use std::collections::HashSet;
use std::path::PathBuf;

use pbsfs::Datastore;

use super::{backup, copy_snapshot, corrupt, tree_one, HOSTNAME_MTIME, T1, T2};
use crate::common::*;

/// host/x at T1 (tree one) and T2 (ssh gone, a new file, a longer hostname), host/y at
/// T1 (another tree with a hostname).
fn three_snapshots(tmp: &TempDir) -> PathBuf {
    let store = sparse_store(tmp);
    let src = tmp.join("src");
    tree_one(&src);
    let arg = format!("root.pxar:{}", s(&src));
    backup(&store, "host/x", T1, std::slice::from_ref(&arg));
    std::fs::remove_dir_all(src.join("etc/ssh")).unwrap();
    std::fs::write(src.join("etc/only-in-second.txt"), b"new\n").unwrap();
    std::fs::write(src.join("etc/hostname"), b"beta-longer\n").unwrap();
    backup(&store, "host/x", T2, &[arg]);
    let other = tmp.join("other");
    std::fs::create_dir_all(other.join("srv")).unwrap();
    std::fs::write(other.join("srv/hostname"), b"y\n").unwrap();
    backup(&store, "host/y", T1, &[format!("root.pxar:{}", s(&other))]);
    store
}

#[test]
fn find_lists_the_snapshots_holding_a_match_by_name_path_or_ignoring_case() {
    let tmp = TempDir::new("catalog-find");
    let store = three_snapshots(&tmp);
    let st = s(&store);
    let x1 = format!("host/x/{T1} root.pxar.didx");
    let x2 = format!("host/x/{T2} root.pxar.didx");
    let y1 = format!("host/y/{T1} root.pxar.didx");
    let find = |args: &[&str]| {
        let mut a = vec!["find", st];
        a.extend(args);
        ok(&pbsfs(&a))
    };
    // A name: every group, every snapshot holding it.
    assert_eq!(
        find(&["hostname"]),
        format!("{x1} /etc/hostname\n{x2} /etc/hostname\n{y1} /srv/hostname\n")
    );
    assert_eq!(
        find(&["host/x", "hostname"]),
        format!("{x1} /etc/hostname\n{x2} /etc/hostname\n")
    );
    // Only the snapshots that hold the file.
    assert_eq!(
        find(&["sshd_config"]),
        format!("{x1} /etc/ssh/sshd_config\n")
    );
    assert_eq!(
        find(&["only-in-*"]),
        format!("{x2} /etc/only-in-second.txt\n")
    );
    // A path (with a `/`) anchors at the archive root; the leading `/` is optional.
    for p in ["/etc/hostname", "etc/hostname", "e*/host?ame"] {
        assert_eq!(
            find(&[p]),
            format!("{x1} /etc/hostname\n{x2} /etc/hostname\n"),
            "{p}"
        );
    }
    assert_eq!(find(&["etc/ssh/"]), format!("{x1} /etc/ssh\n"));
    assert_eq!(
        find(&["**/Notes.TXT"]),
        format!("{x1} /home/user/Notes.TXT\n{x2} /home/user/Notes.TXT\n")
    );
    // Case: exact unless --ignore-case.
    let out = pbsfs(&["find", st, "notes.txt"]);
    assert_eq!(exits(&out, 1), "", "no match: exit 1, nothing printed");
    for flag in ["--ignore-case", "-i"] {
        assert_eq!(
            find(&["NOTES.*", flag]),
            format!("{x1} /home/user/Notes.TXT\n{x2} /home/user/Notes.TXT\n")
        );
    }
    // Names that need quoting stay on one line.
    assert_eq!(
        find(&["bad*"]),
        format!("{x1} \"/bad\\xFFname\"\n{x2} \"/bad\\xFFname\"\n")
    );

    // JSON: one object per match.
    let out = find(&["hostname", "--output-format", "json"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v[1],
        serde_json::json!({"snapshot": format!("host/x/{T2}"), "archive": "root.pxar.didx",
            "path": "/etc/hostname", "type": "f", "size": 12,
            "mtime": v[1]["mtime"].as_i64().unwrap()})
    );
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["mtime"], HOSTNAME_MTIME);
    let out = pbsfs(&["find", st, "zzz", "--output-format", "json"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&exits(&out, 1)).unwrap();
    assert!(v.is_empty());

    // A namespace is searched only when named.
    let ns_src = tmp.join("ns-src");
    std::fs::create_dir_all(&ns_src).unwrap();
    std::fs::write(ns_src.join("hostname"), b"ns\n").unwrap();
    let arg = format!("root.pxar:{}", s(&ns_src));
    ok(&pbsfs(&[
        "backup",
        st,
        "host/z",
        &arg,
        "--ns",
        "team",
        "--create-ns",
        "--backup-time",
        T1,
    ]));
    assert!(!find(&["hostname"]).contains("host/z"));
    assert_eq!(
        find(&["hostname", "--ns", "team"]),
        format!("host/z/{T1} root.pxar.didx /hostname\n")
    );

    // Errors: a group that does not exist, a pattern naming no entry: exit 2.
    let err = fails_with(&pbsfs(&["find", st, "host/nope", "hostname"]), 2);
    assert!(err.contains("host/nope"), "{err}");
    let err = fails_with(&pbsfs(&["find", st, "/"]), 2);
    assert!(err.contains("pattern"), "{err}");
}

#[test]
fn a_corrupt_catalog_is_reported_and_the_search_goes_on() {
    let tmp = TempDir::new("catalog-corrupt");
    let store = three_snapshots(&tmp);
    let ds = Datastore::open(&store, None).unwrap();
    // host/x at T1: a catalog chunk that fails its check.
    let snap = format!("host/x/{T1}");
    let idx = ds
        .read_index(&store.join(&snap).join("catalog.pcat1.didx"))
        .unwrap();
    let digest = idx.chunk_info(0).unwrap().digest;
    corrupt(&ds, &digest);
    // host/w: a catalog whose chunk is sound and whose content is not: its root block
    // at offset 8 claims a length past the file.
    let mut garbage = pbsfs::pxar::catalog::CATALOG_MAGIC.to_vec();
    garbage.extend_from_slice(&[0xff, 0xff, 0x7f, 0, 0, 0, 0, 0]);
    garbage.extend_from_slice(&8u64.to_le_bytes());
    let w = copy_snapshot(&ds, &format!("host/x/{T2}"), "host/w", Some(&garbage));
    let chunks = chunk_files(&store);
    let bad = std::fs::read(ds.chunk_store().chunk_path(&digest)).unwrap();

    let out = pbsfs(&["find", s(&store), "hostname"]);
    let err = fails_with(&out, 2);
    assert!(
        err.contains(&format!("{snap}/catalog.pcat1.didx")) && err.contains(&digest.to_hex()),
        "names the snapshot, the catalog and the chunk: {err}"
    );
    assert!(
        err.contains(&format!("{w}/catalog.pcat1.didx")) && err.contains("offset 8"),
        "names the catalog and the offset: {err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
    assert_eq!(
        stdout(&out),
        format!(
            "host/x/{T2} root.pxar.didx /etc/hostname\n\
             host/y/{T1} root.pxar.didx /srv/hostname\n"
        ),
        "the other snapshots are still searched"
    );
    let err = fails_with(&pbsfs(&["catalog", s(&store), &snap]), 2);
    assert!(err.contains(&digest.to_hex()), "{err}");
    let err = fails_with(&pbsfs(&["catalog", s(&store), &w]), 2);
    assert!(err.contains("offset 8"), "{err}");
    // Read-only: nothing renamed, nothing healed.
    assert_eq!(chunk_files(&store), chunks);
    assert_eq!(
        std::fs::read(ds.chunk_store().chunk_path(&digest)).unwrap(),
        bad
    );
}

#[test]
fn find_reads_only_catalogs_never_the_archives() {
    let tmp = TempDir::new("catalog-nocontent");
    let store = three_snapshots(&tmp);
    let ds = Datastore::open(&store, None).unwrap();
    let before = ok(&pbsfs(&["find", s(&store), "*"]));
    let dump = ok(&pbsfs(&["catalog", s(&store), &format!("host/x/{T1}")]));
    // Every chunk of every archive corrupt (the catalogs' chunks are their own).
    let mut catalog_chunks = HashSet::new();
    let mut archive_chunks = HashSet::new();
    for snap in [
        format!("host/x/{T1}"),
        format!("host/x/{T2}"),
        format!("host/y/{T1}"),
    ] {
        for (file, set) in [
            ("catalog.pcat1.didx", &mut catalog_chunks),
            ("root.pxar.didx", &mut archive_chunks),
        ] {
            let idx = ds.read_index(&store.join(&snap).join(file)).unwrap();
            for i in 0..idx.chunk_count() {
                set.insert(idx.chunk_info(i).unwrap().digest);
            }
        }
    }
    assert!(catalog_chunks.is_disjoint(&archive_chunks));
    for d in &archive_chunks {
        corrupt(&ds, d);
    }
    let err = fails_with(
        &pbsfs(&[
            "cat",
            s(&store),
            &format!("host/x/{T1}"),
            "root.pxar/etc/hostname",
        ]),
        2,
    );
    assert!(err.contains("chunk"), "the archives are unreadable: {err}");
    assert_eq!(ok(&pbsfs(&["find", s(&store), "*"])), before);
    assert!(before.lines().count() > 20, "{before}");
    assert_eq!(
        ok(&pbsfs(&["catalog", s(&store), &format!("host/x/{T1}")])),
        dump
    );
}
