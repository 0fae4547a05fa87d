//! `pbsfs catalog` and `pbsfs find`: the dump lists every entry of a backed-up tree with
//! its type, size and mtime as upstream prints them, the same from the catalog and from
//! the metadata stream of a snapshot without one; `find` by name, by path, ignoring
//! case, across groups and snapshots, grep's exit codes; a damaged catalog is reported
//! and the search goes on; no file content is ever read.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pbsfs::store::format::index::dynamic::DynamicIndex;
use pbsfs::store::format::manifest::{CryptMode, FileEntry, Manifest};
use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use pbsfs::Datastore;

use crate::common::*;

mod find;

pub(crate) const T1: &str = "2024-05-02T08:11:33Z";
pub(crate) const T2: &str = "2024-05-03T08:11:33Z";
pub(crate) const HOSTNAME_MTIME: i64 = 1_714_637_493; // 2024-05-02T08:11:33Z

fn sh(cmd: &str, args: &[&OsStr]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {}", describe(&out));
}

/// Set a path's mtime (not following symlinks) to `epoch` seconds.
fn set_mtime(p: &Path, epoch: i64) {
    let d = format!("@{epoch}");
    sh(
        "touch",
        &[
            OsStr::new("-h"),
            OsStr::new("-d"),
            OsStr::new(&d),
            p.as_os_str(),
        ],
    );
}

/// The first snapshot's tree: one entry of every kind, a hard link, a file from 1960,
/// names with a space and with a byte that is not UTF-8.
pub(crate) fn tree_one(root: &Path) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("etc/ssh")).unwrap();
    std::fs::create_dir_all(p("home/user")).unwrap();
    std::fs::write(p("etc/hostname"), b"alpha\n").unwrap();
    set_mtime(&p("etc/hostname"), HOSTNAME_MTIME);
    std::fs::write(p("etc/ssh/sshd_config"), b"Port 22\n").unwrap();
    std::os::unix::fs::symlink("hostname", p("etc/link")).unwrap();
    std::fs::write(p("home/user/Notes.TXT"), b"notes\n").unwrap();
    std::fs::write(p("home/user/hard"), b"linked\n").unwrap();
    std::fs::hard_link(p("home/user/hard"), p("home/zz-hard")).unwrap();
    std::fs::write(p("old file"), b"from 1960\n").unwrap();
    set_mtime(&p("old file"), -315_619_200);
    std::fs::write(root.join(OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
    sh("mkfifo", &[p("fifo").as_os_str()]);
    drop(std::os::unix::net::UnixListener::bind(p("sock")).unwrap());
    for (name, ty, major, minor) in [("chardev", "c", "1", "3"), ("blockdev", "b", "7", "0")] {
        let args = [
            p(name).into_os_string(),
            ty.into(),
            major.into(),
            minor.into(),
        ];
        sh(
            "mknod",
            &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        );
    }
}

pub(crate) fn backup(store: &Path, group: &str, time: &str, archives: &[String]) {
    let mut args = vec!["backup", s(store), group];
    args.extend(archives.iter().map(String::as_str));
    args.extend(["--backup-time", time, "--chunk-size", "64K"]);
    ok(&pbsfs(&args));
}

/// The catalog dump upstream would print for `src` as archive `archive`, built from the
/// source tree: pre-order, names sorted by bytes, the first name of a hard-linked file
/// `f`, the later ones `h`.
fn expected_dump(src: &Path, archive: &str) -> Vec<String> {
    fn walk(dir: &Path, shown: &Path, seen: &mut HashSet<(u64, u64)>, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let (path, shown) = (dir.join(&name), shown.join(&name));
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let ty = if ft.is_dir() {
                'd'
            } else if ft.is_file() {
                if md.nlink() > 1 && !seen.insert((md.dev(), md.ino())) {
                    'h'
                } else {
                    'f'
                }
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_block_device() {
                'b'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_fifo() {
                'p'
            } else {
                assert!(ft.is_socket());
                's'
            };
            if ty == 'f' {
                let t = pbsfs::util::time::format_utc(md.mtime()).unwrap();
                out.push(format!("f {shown:?} {} {t}", md.len()));
            } else {
                out.push(format!("{ty} {shown:?}"));
            }
            if ft.is_dir() {
                walk(&path, &shown, seen, out);
            }
        }
    }
    let top = PathBuf::from(format!("./{archive}"));
    let mut out = vec![format!("d {top:?}")];
    walk(src, &top, &mut HashSet::new(), &mut out);
    out
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

#[test]
fn the_dump_lists_every_entry_with_type_size_and_mtime_as_upstream_prints_them() {
    let tmp = TempDir::new("catalog-dump");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    tree_one(&src);
    let conf = tmp.join("x.conf");
    std::fs::write(&conf, b"a = b\n").unwrap();
    let archives = [
        format!("root.pxar:{}", s(&src)),
        format!("etc.pxar:{}", s(&src.join("etc"))),
        format!("x.conf:{}", s(&conf)),
    ];
    backup(&store, "host/x", T1, &archives);
    let snap = format!("host/x/{T1}");

    let dump = lines(&ok(&pbsfs(&["catalog", s(&store), &snap])));
    let mut want = expected_dump(&src, "root.pxar.didx");
    want.extend(expected_dump(&src.join("etc"), "etc.pxar.didx"));
    assert_eq!(dump, want);
    // Literal lines, independent of the expectation's formatting.
    for line in [
        "d \"./root.pxar.didx\"",
        "f \"./root.pxar.didx/etc/hostname\" 6 2024-05-02T08:11:33Z",
        "f \"./root.pxar.didx/old file\" 10 1960-01-01T00:00:00Z",
        "f \"./root.pxar.didx/bad\\xFFname\" 1 ",
        "h \"./root.pxar.didx/home/zz-hard\"",
        "l \"./root.pxar.didx/etc/link\"",
        "c \"./root.pxar.didx/chardev\"",
        "b \"./root.pxar.didx/blockdev\"",
        "p \"./root.pxar.didx/fifo\"",
        "s \"./root.pxar.didx/sock\"",
        "f \"./etc.pxar.didx/hostname\" 6 2024-05-02T08:11:33Z",
    ] {
        assert!(
            dump.iter().any(|l| l.starts_with(line)),
            "{line} in {dump:#?}"
        );
    }

    // One archive: exactly its lines of the whole dump, by either name.
    for name in ["etc.pxar", "etc.pxar.didx"] {
        let one = lines(&ok(&pbsfs(&["catalog", s(&store), &snap, name])));
        let subset: Vec<String> = dump
            .iter()
            .filter(|l| l.contains("\"./etc.pxar.didx"))
            .cloned()
            .collect();
        assert_eq!(one, subset);
        assert_eq!(one.len(), 5, "{one:#?}");
    }

    // JSON: type, path as PBS's API shows it, size and mtime of files only.
    let out = ok(&pbsfs(&[
        "catalog",
        s(&store),
        &snap,
        "root.pxar",
        "--output-format",
        "json",
    ]));
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), expected_dump(&src, "root.pxar.didx").len());
    let host = v
        .iter()
        .find(|e| e["path"] == "/root.pxar.didx/etc/hostname")
        .expect("hostname listed");
    assert_eq!(
        host,
        &serde_json::json!({"type": "f", "path": "/root.pxar.didx/etc/hostname",
            "size": 6, "mtime": HOSTNAME_MTIME})
    );
    let dir = v
        .iter()
        .find(|e| e["path"] == "/root.pxar.didx/etc")
        .unwrap();
    assert_eq!(
        dir,
        &serde_json::json!({"type": "d", "path": "/root.pxar.didx/etc"})
    );

    // Not a pxar archive, no such archive, a snapshot with no pxar archive: exit 2.
    let err = fails_with(&pbsfs(&["catalog", s(&store), &snap, "x.conf"]), 2);
    assert!(
        err.contains("x.conf.blob") && err.contains("not a pxar archive"),
        "{err}"
    );
    let err = fails_with(&pbsfs(&["catalog", s(&store), &snap, "nope.pxar"]), 2);
    assert!(err.contains("nope.pxar"), "{err}");
    ok(&backup_image(&store, &tmp, "vm/100", &[7u8; 8192], T1));
    let err = fails_with(&pbsfs(&["catalog", s(&store), &format!("vm/100/{T1}")]), 2);
    assert!(err.contains(&format!("vm/100/{T1}")), "{err}");
}

/// Give `d`'s `root.pxar.didx` a new snapshot of `group` whose manifest lists that
/// archive and, when given, `catalog` as its catalog (else it has none).
pub(crate) fn copy_snapshot(
    ds: &Datastore,
    d: &str,
    group: &str,
    catalog: Option<&[u8]>,
) -> String {
    let ns = BackupNamespace::root();
    let from = BackupDir::parse(&ns, d).unwrap();
    let entry = ds
        .load_manifest(&from)
        .unwrap()
        .file("root.pxar.didx")
        .unwrap();
    let raw = std::fs::read(ds.snapshot_path(&from).join("root.pxar.didx")).unwrap();
    let g = BackupGroup::parse(&ns, group).unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let to = BackupDir::new(g, from.time).unwrap();
    let lock = ds.create_snapshot_dir(&to).unwrap();
    let dir = ds.snapshot_path(&to);
    pbsfs::store::files::write_index_file(&dir.join("root.pxar.didx"), &raw, ds.owner()).unwrap();
    let mut m = Manifest::new(&to);
    m.add_file(&entry);
    if let Some(cat) = catalog {
        let (digest, _, _) = ds.chunk_store().insert_plain(cat).unwrap();
        let idx = DynamicIndex::new(vec![(cat.len() as u64, digest)], to.time).unwrap();
        let path = dir.join("catalog.pcat1.didx");
        pbsfs::store::files::write_index_file(&path, &idx.to_bytes(), ds.owner()).unwrap();
        m.add_file(&FileEntry {
            filename: "catalog.pcat1.didx".into(),
            crypt_mode: CryptMode::None,
            size: cat.len() as u64,
            csum: idx.csum,
        });
    }
    ds.create_manifest(&to, &m, &lock).unwrap();
    crate::mount_util::release_lock(ds, &to, lock);
    format!("{group}/{}", to.time_string())
}

/// Flip a byte in the middle of chunk `digest`.
pub(crate) fn corrupt(ds: &Datastore, digest: &pbsfs::Digest) {
    let path = ds.chunk_store().chunk_path(digest);
    let mut raw = std::fs::read(&path).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x40;
    std::fs::write(&path, &raw).unwrap();
}

#[test]
fn without_a_catalog_the_metadata_stream_gives_the_same_entries_and_no_content_is_read() {
    let tmp = TempDir::new("catalog-nocat");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    tree_one(&src);
    // First in the stream (sorted by name): its content spans stream offset 1 MiB.
    std::fs::write(src.join("0big"), pseudo_random(2 << 20, 5)).unwrap();
    backup(&store, "host/x", T1, &[format!("root.pxar:{}", s(&src))]);
    let ds = Datastore::open(&store, None).unwrap();
    let with = format!("host/x/{T1}");
    let without = copy_snapshot(&ds, &with, "host/nocat", None);

    let from_catalog = ok(&pbsfs(&["catalog", s(&store), &with]));
    let from_stream = ok(&pbsfs(&["catalog", s(&store), &without]));
    assert_eq!(lines(&from_stream), expected_dump(&src, "root.pxar.didx"));
    assert_eq!(from_stream, from_catalog);

    // A chunk holding only file content, corrupt: listing and searching never read it.
    let idx = ds
        .read_index(&store.join(&without).join("root.pxar.didx"))
        .unwrap();
    let (mid, _) = idx.locate(1 << 20).unwrap();
    corrupt(&ds, &idx.chunk_info(mid).unwrap().digest);
    let err = fails_with(&pbsfs(&["cat", s(&store), &without, "root.pxar/0big"]), 2);
    assert!(err.contains("chunk"), "the content is unreadable: {err}");
    assert_eq!(ok(&pbsfs(&["catalog", s(&store), &without])), from_catalog);
    let out = ok(&pbsfs(&["find", s(&store), "0big"]));
    assert_eq!(
        out,
        format!(
            "host/nocat/{T1} root.pxar.didx /0big\n\
             host/x/{T1} root.pxar.didx /0big\n"
        )
    );
}

#[test]
fn a_split_archive_is_listed_from_its_metadata_stream_without_its_payload() {
    let Some(fixtures) = fixtures_dir() else {
        return;
    };
    let tmp = TempDir::new("catalog-split");
    let store = sparse_store(&tmp);
    let ds = Datastore::open(&store, None).unwrap();
    // PBS's own split pair: the metadata stream as one chunk, the payload index with
    // none of its chunks in the store, so any payload read fails.
    let meta = std::fs::read(fixtures.join("backup-client-pxar-data.mpxar")).unwrap();
    let payload_raw = std::fs::read(fixtures.join("backup-client-pxar-data.ppxar.didx")).unwrap();
    let payload = DynamicIndex::parse(&payload_raw).unwrap();
    let g = BackupGroup::new(BackupNamespace::root(), BackupType::Host, "split").unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let d = BackupDir::new(g, 1_715_091_951).unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    let (digest, _, _) = ds.chunk_store().insert_plain(&meta).unwrap();
    let midx = DynamicIndex::new(vec![(meta.len() as u64, digest)], d.time).unwrap();
    let dir = ds.snapshot_path(&d);
    let owner = ds.owner();
    pbsfs::store::files::write_index_file(&dir.join("root.mpxar.didx"), &midx.to_bytes(), owner)
        .unwrap();
    pbsfs::store::files::write_index_file(&dir.join("root.ppxar.didx"), &payload_raw, owner)
        .unwrap();
    let mut m = Manifest::new(&d);
    for (name, size, csum) in [
        ("root.mpxar.didx", meta.len() as u64, midx.csum),
        ("root.ppxar.didx", payload.size(), payload.csum),
    ] {
        m.add_file(&FileEntry {
            filename: name.into(),
            crypt_mode: CryptMode::None,
            size,
            csum,
        });
    }
    ds.create_manifest(&d, &m, &lock).unwrap();
    crate::mount_util::release_lock(&ds, &d, lock);
    let snap = format!("host/split/{}", d.time_string());

    let err = fails_with(
        &pbsfs(&["cat", s(&store), &snap, "root.pxar/folder_0/file_0"]),
        2,
    );
    assert!(err.contains("missing"), "the payload is absent: {err}");
    for args in [vec![], vec!["root.pxar"]] {
        let mut a = vec!["catalog", s(&store), &snap];
        a.extend(args);
        let dump = lines(&ok(&pbsfs(&a)));
        assert_eq!(dump.len(), 111, "a root, 10 folders of 10 files: {dump:#?}");
        assert_eq!(dump[0], "d \"./root.mpxar.didx\"");
        assert_eq!(dump[1], "d \"./root.mpxar.didx/folder_0\"");
        let f = &dump[2];
        assert!(
            f.starts_with("f \"./root.mpxar.didx/folder_0/file_0\" 1048576 ") && f.ends_with('Z'),
            "{f}"
        );
    }
    let out = ok(&pbsfs(&["find", s(&store), "file_7"]));
    let want: String = (0..10)
        .map(|i| format!("{snap} root.mpxar.didx /folder_{i}/file_7\n"))
        .collect();
    assert_eq!(out, want);
}
