//! `pbsfs diff`: between two backups of a tree, exactly the changed, added, removed,
//! renamed, mode-changed, retargeted and xattr-changed paths are listed with restic's
//! markers, in text and JSON; an archive in one snapshot only is listed whole; no file
//! content is read (a corrupt chunk inside a large unchanged file does not matter).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pbsfs::store::format::names::{BackupDir, BackupNamespace};
use pbsfs::Datastore;
use serde_json::Value;

use crate::common::*;

const T1: &str = "2024-05-02T08:11:33Z";
const T2: &str = "2024-05-03T08:11:33Z";
const BIG: usize = 1 << 20;

fn run(cmd: &str, args: &[&OsStr]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {}", describe(&out));
}

fn backup(store: &Path, time: &str, archives: &[String]) {
    let mut args = vec!["backup", s(store), "host/x"];
    args.extend(archives.iter().map(String::as_str));
    args.extend(["--backup-time", time, "--chunk-size", "64K"]);
    ok(&pbsfs(&args));
}

/// The first tree: large files (many 64K chunks each), small ones, a symlink.
fn tree_one(root: &Path) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("etc")).unwrap();
    std::fs::create_dir_all(p("data")).unwrap();
    std::fs::write(p("data/big-same"), pseudo_random(BIG, 1)).unwrap();
    std::fs::write(p("data/big-edit"), pseudo_random(BIG, 2)).unwrap();
    std::fs::write(p("etc/hostname"), b"alpha\n").unwrap();
    std::fs::write(p("etc/gone"), b"removed later\n").unwrap();
    std::fs::write(p("etc/old-name"), b"renamed later\n").unwrap();
    std::fs::write(p("etc/mode"), b"chmod later\n").unwrap();
    std::fs::write(p("etc/attr"), b"xattr later\n").unwrap();
    std::fs::write(p("etc/target-a"), b"a\n").unwrap();
    std::os::unix::fs::symlink("target-a", p("etc/link")).unwrap();
}

/// The seven changes.
fn change_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    // Same size, new bytes in the middle, a new mtime.
    let mut big = std::fs::read(p("data/big-edit")).unwrap();
    big[BIG / 2..BIG / 2 + 100].fill(0x5a);
    std::fs::write(p("data/big-edit"), &big).unwrap();
    run(
        "touch",
        &[
            OsStr::new("-d"),
            OsStr::new("@1800000000"),
            p("data/big-edit").as_os_str(),
        ],
    );
    std::fs::write(p("etc/new"), b"added\n").unwrap();
    std::fs::remove_file(p("etc/gone")).unwrap();
    std::fs::rename(p("etc/old-name"), p("etc/new-name")).unwrap();
    std::fs::set_permissions(p("etc/mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(p("etc/link")).unwrap();
    std::os::unix::fs::symlink("hostname", p("etc/link")).unwrap();
    run(
        "setfattr",
        &[
            OsStr::new("-n"),
            OsStr::new("user.color"),
            OsStr::new("-v"),
            OsStr::new("blue"),
            p("etc/attr").as_os_str(),
        ],
    );
}

/// The expected text lines, sorted as the walk prints them (by path).
const WANT: &[&str] = &[
    "M    root.pxar/data/big-edit",
    "U    root.pxar/etc/attr",
    "-    root.pxar/etc/gone",
    "M    root.pxar/etc/link",
    "U    root.pxar/etc/mode",
    "+    root.pxar/etc/new",
    "+    root.pxar/etc/new-name",
    "-    root.pxar/etc/old-name",
];

fn setup(tag: &str) -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = TempDir::new(tag);
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    tree_one(&src);
    backup(&store, T1, &[format!("root.pxar:{}", s(&src))]);
    change_tree(&src);
    (tmp, store, src)
}

#[test]
fn text_lists_exactly_the_changes_with_restic_markers() {
    let (_tmp, store, src) = setup("diff-text");
    backup(&store, T2, &[format!("root.pxar:{}", s(&src))]);
    let a = format!("host/x/{T1}");
    let out = ok(&pbsfs(&["diff", s(&store), &a, "host/x/latest"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, WANT, "{out}");
    // The same with the archive named, in either spelling.
    for name in ["root.pxar", "root.pxar.didx"] {
        let b = format!("host/x/{T2}");
        let out = ok(&pbsfs(&["diff", s(&store), &a, &b, name]));
        assert_eq!(out.lines().collect::<Vec<_>>(), WANT, "{name}");
    }
    // A snapshot against itself: nothing, exit 0.
    assert_eq!(ok(&pbsfs(&["diff", s(&store), &a, &a])), "");
    // The other way round: added and removed swap.
    let out = ok(&pbsfs(&["diff", s(&store), "host/x/latest", &a]));
    assert!(out.lines().any(|l| l == "+    root.pxar/etc/gone"), "{out}");
    assert!(out.lines().any(|l| l == "-    root.pxar/etc/new"), "{out}");
}

#[test]
fn json_says_what_changed() {
    let (_tmp, store, src) = setup("diff-json");
    backup(&store, T2, &[format!("root.pxar:{}", s(&src))]);
    let a = format!("host/x/{T1}");
    let b = format!("host/x/{T2}");
    let out = ok(&pbsfs(&[
        "diff",
        s(&store),
        &a,
        &b,
        "--output-format",
        "json",
    ]));
    let v: Vec<Value> = serde_json::from_str(&out).unwrap();
    let get = |p: &str| {
        let e = v
            .iter()
            .find(|e| e["path"] == p)
            .unwrap_or_else(|| panic!("{p} in {out}"));
        let what: Vec<&str> = e["what"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        (e["change"].as_str().unwrap().to_string(), what)
    };
    assert_eq!(v.len(), WANT.len(), "{out}");
    assert_eq!(
        get("root.pxar/data/big-edit"),
        ("modified".into(), vec!["content", "times"])
    );
    assert_eq!(
        get("root.pxar/etc/attr"),
        ("metadata".into(), vec!["xattrs"])
    );
    assert_eq!(get("root.pxar/etc/mode"), ("metadata".into(), vec!["mode"]));
    let (c, what) = get("root.pxar/etc/link");
    assert_eq!(c, "modified");
    assert!(what.contains(&"target"), "{what:?}");
    assert_eq!(get("root.pxar/etc/gone"), ("removed".into(), vec![]));
    assert_eq!(get("root.pxar/etc/new-name"), ("added".into(), vec![]));
}

#[test]
fn an_archive_in_one_snapshot_only_is_listed_whole_and_errors_exit_2() {
    let (tmp, store, src) = setup("diff-archive");
    let extra = tmp.join("extra");
    std::fs::create_dir_all(extra.join("sub")).unwrap();
    std::fs::write(extra.join("sub/f"), b"f\n").unwrap();
    backup(
        &store,
        T2,
        &[
            format!("root.pxar:{}", s(&src)),
            format!("extra.pxar:{}", s(&extra)),
        ],
    );
    let a = format!("host/x/{T1}");
    let out = ok(&pbsfs(&["diff", s(&store), &a, "host/x/latest"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            "+    extra.pxar/",
            "+    extra.pxar/sub/",
            "+    extra.pxar/sub/f"
        ],
        "{out}"
    );
    assert_eq!(&lines[3..], WANT);
    // Errors: exit 2, naming the object.
    let err = fails_with(
        &pbsfs(&["diff", s(&store), &a, "host/x/latest", "nope.pxar"]),
        2,
    );
    assert!(err.contains("nope.pxar"), "{err}");
    let err = fails_with(&pbsfs(&["diff", s(&store), &a, "host/y/latest"]), 2);
    assert!(err.contains("host/y"), "{err}");
}

#[test]
fn no_file_content_is_read() {
    let (tmp, store, src) = setup("diff-noread");
    backup(&store, T2, &[format!("root.pxar:{}", s(&src))]);
    // Corrupt a chunk lying wholly inside big-same's content in snapshot A (the same
    // chunk in B, which shares it): the decoder must never touch it.
    let ds = Datastore::open(&store, None).unwrap();
    let d = BackupDir::parse(&BackupNamespace::root(), &format!("host/x/{T1}")).unwrap();
    let idx = ds
        .read_index(&ds.snapshot_path(&d).join("root.pxar.didx"))
        .unwrap();
    let mut stream = Vec::new();
    let mut infos = Vec::new();
    for i in 0..idx.chunk_count() {
        let c = idx.chunk_info(i).unwrap();
        stream.extend(
            ds.chunk_store()
                .read_verified(&c.digest, Some(c.len()))
                .unwrap(),
        );
        infos.push(c);
    }
    let content = pseudo_random(BIG, 1);
    let start = stream
        .windows(256)
        .position(|w| w == &content[..256])
        .expect("big-same's content in the stream") as u64;
    let end = start + BIG as u64;
    let inner: Vec<_> = infos
        .iter()
        .filter(|c| c.start > start && c.end < end)
        .collect();
    assert!(inner.len() >= 4, "1 MiB at 64K chunks: {}", inner.len());
    let victim = inner[inner.len() / 2];
    let path = ds.chunk_store().chunk_path(&victim.digest);
    let mut raw = std::fs::read(&path).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x40;
    std::fs::write(&path, &raw).unwrap();
    drop(ds);

    let a = format!("host/x/{T1}");
    let out = ok(&pbsfs(&["diff", s(&store), &a, "host/x/latest"]));
    assert_eq!(out.lines().collect::<Vec<_>>(), WANT, "{out}");
    // The corruption is real: restoring the file reads it and fails.
    let dest = tmp.join("restored");
    let out = pbsfs(&[
        "restore",
        s(&store),
        &a,
        "root.pxar",
        s(&dest),
        "--path",
        "data/big-same",
    ]);
    let err = fails(&out);
    assert!(
        err.contains(&victim.digest.to_hex()),
        "restore must fail on the corrupted chunk: {err}"
    );
}

#[test]
fn split_archives_compare_from_their_metadata_streams_alone() {
    let (_tmp, store, src) = setup("diff-split");
    let arch = [format!("root.pxar:{}", s(&src))];
    let mut args = vec!["backup", s(&store), "host/x"];
    args.extend(arch.iter().map(String::as_str));
    args.extend([
        "--backup-time",
        T2,
        "--chunk-size",
        "64K",
        "--change-detection-mode",
        "data",
    ]);
    ok(&pbsfs(&args));
    let a = format!("host/x/{T1}");
    let b = format!("host/x/{T2}");
    let ds = Datastore::open(&store, None).unwrap();
    let db = BackupDir::parse(&BackupNamespace::root(), &b).unwrap();
    let payload = ds.snapshot_path(&db).join("root.ppxar.didx");
    assert!(payload.is_file(), "a split pair was written");
    // A legacy archive against a split pair: the same name, the same changes.
    let out = ok(&pbsfs(&["diff", s(&store), &a, &b]));
    assert_eq!(out.lines().collect::<Vec<_>>(), WANT, "{out}");
    // The payload stream is never opened: without it, the same answer.
    std::fs::remove_file(&payload).unwrap();
    for name in ["root.pxar", "root.mpxar.didx"] {
        let out = ok(&pbsfs(&["diff", s(&store), &a, &b, name]));
        assert_eq!(out.lines().collect::<Vec<_>>(), WANT, "{name}: {out}");
    }
}

#[test]
fn a_type_change_is_t_and_what_lies_below_is_added_or_removed() {
    let tmp = TempDir::new("diff-type");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir_all(src.join("was-dir")).unwrap();
    std::fs::write(src.join("was-dir/inner"), b"i\n").unwrap();
    std::fs::write(src.join("was-file"), b"f\n").unwrap();
    std::fs::write(src.join("line\nbreak"), b"odd\n").unwrap();
    backup(&store, T1, &[format!("root.pxar:{}", s(&src))]);
    std::fs::remove_dir_all(src.join("was-dir")).unwrap();
    std::fs::write(src.join("was-dir"), b"now a file\n").unwrap();
    std::fs::remove_file(src.join("was-file")).unwrap();
    std::fs::create_dir(src.join("was-file")).unwrap();
    std::fs::write(src.join("was-file/child"), b"c\n").unwrap();
    std::fs::remove_file(src.join("line\nbreak")).unwrap();
    backup(&store, T2, &[format!("root.pxar:{}", s(&src))]);
    let a = format!("host/x/{T1}");
    let out = ok(&pbsfs(&["diff", s(&store), &a, "host/x/latest"]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "-    \"root.pxar/line\\nbreak\"",
            "T    root.pxar/was-dir",
            "-    root.pxar/was-dir/inner",
            "T    root.pxar/was-file/",
            "+    root.pxar/was-file/child",
        ],
        "{out}"
    );
}
