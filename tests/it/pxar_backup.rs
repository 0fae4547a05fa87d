//! `pbsfs backup STORE TYPE/ID NAME.pxar:DIR`: a generated tree with every kind of
//! entry and metadata backed up, its stream walked strictly and compared with the
//! source, its catalog read back; dedup between runs; excludes; file system
//! boundaries; unreadable and changing files reported, never fatal.

mod rules;
mod stream;

use std::ffi::OsStr;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pbsfs::pxar::catalog::{CatalogAttr, CatalogReader};
use pbsfs::pxar::format::*;
use pbsfs::util::sys::{get_xattr, list_xattrs, XattrSource};

use crate::common::*;
use stream::{Kind, Tree};

fn run(cmd: &str, args: &[&OsStr]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {}", describe(&out));
}

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Set mtime (and atime) with `touch -h -d` (nanoseconds, dates before 1970).
fn touch(p: &Path, date: &str) {
    run(
        "touch",
        &[OsStr::new("-h"), OsStr::new("-d"), OsStr::new(date), os(p)],
    );
}

/// The names the tree holds beyond plain ASCII.
pub(crate) fn odd_names() -> Vec<Vec<u8>> {
    vec![
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        "\u{fc}n\u{ef}c\u{f6}d\u{e9} \u{1F600}".as_bytes().to_vec(),
        b"bad \xff\xfe utf8".to_vec(),
        vec![b'n'; 255],
    ]
}

/// Build the test tree; returns the deep file's path.
pub(crate) fn build_tree(root: &Path) -> PathBuf {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("a/b/c")).unwrap();
    std::fs::create_dir_all(p("empty-dir")).unwrap();
    std::fs::write(p("a/empty"), b"").unwrap();
    std::fs::write(p("big"), pseudo_random(3 << 20, 11)).unwrap();
    std::fs::write(p("a/b/c/small"), b"small file\n").unwrap();
    // Sparse: 8 MiB with 4 KiB of data in the middle.
    let mut f = std::fs::File::create(p("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.seek(SeekFrom::Start(4 << 20)).unwrap();
    f.write_all(&pseudo_random(4096, 12)).unwrap();
    drop(f);
    std::os::unix::fs::symlink("big", p("link")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", p("dangling")).unwrap();
    std::fs::write(p("a/b/h3"), b"three names\n").unwrap();
    std::fs::hard_link(p("a/b/h3"), p("a/h2")).unwrap();
    std::fs::hard_link(p("a/b/h3"), p("h1")).unwrap();
    run("mkfifo", &[os(&p("fifo"))]);
    let sock = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
    drop(sock);
    run(
        "mknod",
        &[
            os(&p("chardev")),
            OsStr::new("c"),
            OsStr::new("1"),
            OsStr::new("3"),
        ],
    );
    for (i, n) in odd_names().iter().enumerate() {
        std::fs::write(root.join(OsStr::from_bytes(n)), format!("odd {i}\n")).unwrap();
    }
    // About 3,000 bytes deep.
    let mut deep = root.join("deep");
    for i in 0..30 {
        deep.push(format!("{i:02}{}", "d".repeat(97)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    let deep_file = deep.join("bottom");
    std::fs::write(&deep_file, b"deep down\n").unwrap();
    assert!(deep_file.as_os_str().len() > 3000);
    // Metadata: xattrs, ACLs, capabilities, modes, owners.
    std::fs::write(p("xattrs"), b"x").unwrap();
    run(
        "setfattr",
        &[
            OsStr::new("-n"),
            OsStr::new("user.color"),
            OsStr::new("-v"),
            OsStr::new("blue"),
            os(&p("xattrs")),
        ],
    );
    run(
        "setfattr",
        &[
            OsStr::new("-n"),
            OsStr::new("trusted.secret"),
            OsStr::new("-v"),
            OsStr::new("0x00ff01"),
            os(&p("xattrs")),
        ],
    );
    std::fs::write(p("acl-file"), b"acl").unwrap();
    run(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:1234:rw-,g:4321:r--"),
            os(&p("acl-file")),
        ],
    );
    std::fs::create_dir(p("acl-dir")).unwrap();
    run(
        "setfacl",
        &[
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("g:55:r-x"),
            os(&p("acl-dir")),
        ],
    );
    std::fs::write(p("capable"), b"#!/bin/true\n").unwrap();
    run("setcap", &[OsStr::new("cap_net_raw+ep"), os(&p("capable"))]);
    std::fs::write(p("private"), b"0600").unwrap();
    std::fs::set_permissions(p("private"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(p("setuid"), b"4755").unwrap();
    std::fs::set_permissions(p("setuid"), PermissionsExt::from_mode(0o4755)).unwrap();
    std::fs::create_dir(p("setgid-dir")).unwrap();
    std::fs::set_permissions(p("setgid-dir"), PermissionsExt::from_mode(0o2775)).unwrap();
    std::fs::write(p("owned"), b"owner").unwrap();
    std::os::unix::fs::chown(p("owned"), Some(1234), Some(5678)).unwrap();
    std::fs::write(p("old"), b"landing").unwrap();
    std::fs::write(p("ns"), b"nanoseconds").unwrap();
    // Times last: adding entries changes folders' mtimes.
    touch(&p("old"), "1969-07-20 20:17:40.123456789 UTC");
    touch(&p("ns"), "2021-03-04 05:06:07.987654321 UTC");
    touch(&p("link"), "2001-02-03 04:05:06.5 UTC");
    touch(&p("a/b"), "1960-01-01 00:00:00.000000001 UTC");
    deep_file
}

/// Every path below `root` (relative, `""` for the root) with its `lstat`.
pub(crate) fn source_tree(root: &Path) -> Vec<(Vec<u8>, std::fs::Metadata)> {
    let mut out = vec![(Vec::new(), std::fs::symlink_metadata(root).unwrap())];
    let mut todo = vec![Vec::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(OsStr::from_bytes(&rel));
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            let mut p = rel.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_bytes());
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.push((p, md));
        }
    }
    out
}

/// Xattrs pbsfs stores for a file, read independently from the source.
fn expected_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let src = XattrSource::NoFollow(path);
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = list_xattrs(src)
        .unwrap()
        .into_iter()
        .filter(|n| {
            (n.starts_with(b"user.") || n.starts_with(b"trusted.") || n.starts_with(b"security."))
                && n != b"security.capability"
        })
        .map(|n| {
            let v = get_xattr(src, &n).unwrap().unwrap();
            (n, v)
        })
        .collect();
    v.sort();
    v
}

/// Compare every source entry with the archive: type, mode, owner, mtime (ns), size,
/// content, symlink target, device, xattrs.
fn compare(root: &Path, stream: &[u8], tree: &Tree) {
    let src = source_tree(root);
    assert_eq!(src.len(), tree.len(), "entry count");
    for (rel, md) in &src {
        let shown = String::from_utf8_lossy(rel);
        let node = tree.get(rel).unwrap_or_else(|| panic!("{shown:?} missing"));
        let s = node.stat;
        assert_eq!(s.mode, md.mode() as u64, "{shown:?} mode");
        assert_eq!((s.uid, s.gid), (md.uid(), md.gid()), "{shown:?} owner");
        assert_eq!(
            (s.mtime_secs, s.mtime_nanos as i64),
            (md.mtime(), md.mtime_nsec()),
            "{shown:?} mtime"
        );
        let path = root.join(OsStr::from_bytes(rel));
        if !md.file_type().is_symlink() {
            assert_eq!(node.xattrs, expected_xattrs(&path), "{shown:?} xattrs");
        }
        match &node.kind {
            Kind::File { at, len } => {
                assert!(md.is_file());
                assert_eq!(
                    &stream[*at..at + len],
                    &std::fs::read(&path).unwrap()[..],
                    "{shown:?}"
                );
            }
            Kind::Hardlink { target, .. } => {
                let t = std::fs::symlink_metadata(root.join(OsStr::from_bytes(target))).unwrap();
                assert_eq!((t.dev(), t.ino()), (md.dev(), md.ino()), "{shown:?} link");
            }
            Kind::Dir => assert!(md.is_dir()),
            Kind::Symlink(t) => {
                assert_eq!(t, std::fs::read_link(&path).unwrap().as_os_str().as_bytes())
            }
            Kind::Device(major, minor) => assert_eq!((*major, *minor), (1, 3), "{shown:?}"),
            Kind::Special => {
                assert!(md.mode() & 0o170000 == 0o010000 || md.mode() & 0o170000 == 0o140000)
            }
        }
    }
}

fn store_and_tree(tmp: &TempDir) -> (PathBuf, PathBuf) {
    let store = sparse_store(tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    (store, src)
}

pub(crate) fn backup(
    store: &Path,
    group: &str,
    archives: &[String],
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["backup", s(store), group];
    args.extend(archives.iter().map(String::as_str));
    args.extend_from_slice(extra);
    pbsfs(&args)
}

fn cat(store: &Path, snap: &str, archive: &str) -> Vec<u8> {
    ok_bytes(pbsfs(&["cat", s(store), snap, archive]))
}

/// Every catalog entry: (path from the catalog root, attr).
fn catalog(raw: &[u8]) -> Vec<(Vec<u8>, CatalogAttr)> {
    let r = CatalogReader::open(raw).unwrap();
    let mut all = Vec::new();
    r.walk(r.root(), &mut |p, e| all.push((p.to_vec(), e.attr)))
        .unwrap();
    all
}

#[test]
fn a_tree_with_every_kind_of_entry_is_stored_exactly() {
    let tmp = TempDir::new("pxar-tree");
    let (store, src) = store_and_tree(&tmp);
    let deep = build_tree(&src);
    let etc = tmp.join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("hostname"), b"pbsfs\n").unwrap();
    let img = tmp.join("disk.img");
    std::fs::write(&img, pseudo_random(100_000, 3)).unwrap();
    let conf = tmp.join("x.conf");
    std::fs::write(&conf, b"a: 1\n").unwrap();
    let archives = [
        format!("root.pxar:{}", s(&src)),
        format!("etc.pxar:{}", s(&etc)),
        format!("disk.img:{}", s(&img)),
        format!("x.conf:{}", s(&conf)),
    ];
    let out = backup(&store, "host/tree", &archives, &["--chunk-size", "64K"]);
    let report = ok(&out);
    assert!(stderr(&out).is_empty(), "no warning: {}", stderr(&out));
    assert!(report.contains(" new bytes"), "{report}");

    // The archive: strict structure, then every entry against the source.
    let stream = cat(&store, "host/tree/latest", "root.pxar");
    let tree = stream::parse(&stream);
    compare(&src, &stream, &tree);
    assert!(
        !tree.contains_key(&b".pxarexclude-cli"[..]),
        "no excludes, no file"
    );
    // Hardlinks: one name carries the content, the two others point to it.
    let names = [&b"a/b/h3"[..], b"a/h2", b"h1"];
    let first = names
        .iter()
        .filter(|n| matches!(tree[**n].kind, Kind::File { .. }))
        .count();
    assert_eq!(first, 1);
    for n in &names[1..] {
        let Kind::Hardlink { target, .. } = &tree[*n].kind else {
            panic!("{n:?} is not a hardlink");
        };
        assert_eq!(
            target, b"a/b/h3",
            "the first name in walk order, without a leading /"
        );
    }
    // ACLs as pxar items, not xattrs; capabilities as FCAPS.
    let acl = &tree[&b"acl-file"[..]];
    assert!(
        acl.acl.contains(&(ACL_USER, vec![1234, 6])),
        "{:?}",
        acl.acl
    );
    assert!(
        acl.acl.contains(&(ACL_GROUP, vec![4321, 4])),
        "{:?}",
        acl.acl
    );
    assert!(acl.acl.iter().any(|(t, _)| *t == ACL_GROUP_OBJ));
    let d = &tree[&b"acl-dir"[..]];
    assert!(
        d.acl.contains(&(ACL_DEFAULT_GROUP, vec![55, 5])),
        "{:?}",
        d.acl
    );
    assert!(d.acl.iter().any(|(t, _)| *t == ACL_DEFAULT));
    assert!(tree
        .values()
        .all(|n| n.xattrs.iter().all(|(k, _)| !k.starts_with(b"system."))));
    let caps = get_xattr(
        XattrSource::NoFollow(&src.join("capable")),
        b"security.capability",
    )
    .unwrap()
    .unwrap();
    assert_eq!(tree[&b"capable"[..]].fcaps.as_ref(), Some(&caps));
    let x = &tree[&b"xattrs"[..]];
    assert!(x
        .xattrs
        .contains(&(b"user.color".to_vec(), b"blue".to_vec())));
    assert!(x
        .xattrs
        .contains(&(b"trusted.secret".to_vec(), vec![0, 0xff, 1])));
    assert_eq!(tree[&b"setuid"[..]].stat.permissions(), 0o4755);
    assert_eq!(tree[&b"setgid-dir"[..]].stat.permissions(), 0o2775);
    let old = &tree[&b"old"[..]].stat;
    assert!(
        old.mtime_secs < 0 && old.mtime_nanos == 123_456_789,
        "{old:?}"
    );
    let deep_rel = deep
        .strip_prefix(&src)
        .unwrap()
        .as_os_str()
        .as_bytes()
        .to_vec();
    assert!(matches!(tree[&deep_rel].kind, Kind::File { .. }));

    // The catalog: both archives, every path with its type, size and mtime.
    let cat_raw = cat(&store, "host/tree/latest", "catalog.pcat1");
    let entries = catalog(&cat_raw);
    let tops: Vec<&[u8]> = entries
        .iter()
        .filter(|(p, _)| !p.contains(&b'/'))
        .map(|(p, _)| &p[..])
        .collect();
    assert_eq!(tops, [&b"root.pxar.didx"[..], b"etc.pxar.didx"]);
    assert!(entries.contains(&(
        b"etc.pxar.didx/hostname".to_vec(),
        CatalogAttr::File {
            size: 6,
            mtime: std::fs::metadata(etc.join("hostname")).unwrap().mtime()
        }
    )));
    let in_root: Vec<&(Vec<u8>, CatalogAttr)> = entries
        .iter()
        .filter(|(p, _)| p.starts_with(b"root.pxar.didx/"))
        .collect();
    assert_eq!(in_root.len(), tree.len() - 1, "every entry but the root");
    for (p, attr) in in_root {
        let rel = &p[b"root.pxar.didx/".len()..];
        let node = &tree[rel];
        let want = match (&node.kind, node.stat.file_type()) {
            (Kind::Hardlink { .. }, _) => b'h',
            (_, S_IFDIR) => b'd',
            (_, S_IFREG) => b'f',
            (_, S_IFLNK) => b'l',
            (_, S_IFCHR) => b'c',
            (_, S_IFBLK) => b'b',
            (_, S_IFIFO) => b'p',
            (_, S_IFSOCK) => b's',
            _ => unreachable!(),
        };
        assert_eq!(attr.type_byte(), want, "{:?}", String::from_utf8_lossy(rel));
        if let (CatalogAttr::File { size, mtime }, Kind::File { len, .. }) = (attr, &node.kind) {
            assert_eq!((*size, *mtime), (*len as u64, node.stat.mtime_secs));
        }
    }

    // The manifest lists archives and catalog; everything verifies.
    let snaps = snapshots_json(&store);
    let files = snaps[0]["files"].to_string();
    for f in [
        "root.pxar.didx",
        "etc.pxar.didx",
        "catalog.pcat1.didx",
        "disk.img.fidx",
        "x.conf.blob",
    ] {
        assert!(files.contains(f), "{f} in {files}");
    }
    let v = ok(&pbsfs(&["verify", s(&store)]));
    assert!(v.contains("1 ok, 0 failed"), "{v}");
    assert_eq!(
        cat(&store, "host/tree/latest", "disk.img"),
        std::fs::read(&img).unwrap()
    );
}

/// `(stream bytes, new chunk bytes)` of a backup's report line.
fn new_bytes(report: &str) -> (u64, u64) {
    let num = |before: &str| -> u64 {
        let i = report
            .find(before)
            .unwrap_or_else(|| panic!("{before:?} in {report}"));
        report[..i]
            .rsplit([' ', ':'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num(" bytes ("), num(" new bytes"))
}

#[test]
fn unchanged_data_is_reused_and_one_changed_file_writes_little() {
    let tmp = TempDir::new("pxar-dedup");
    let (store, src) = store_and_tree(&tmp);
    std::fs::create_dir(src.join("data")).unwrap();
    for i in 0..60 {
        let f = src.join(format!("data/f{i:02}"));
        std::fs::write(f, pseudo_random(256 << 10, 100 + i)).unwrap();
    }
    std::fs::write(src.join("big"), pseudo_random(8 << 20, 7)).unwrap();
    let arch = [format!("root.pxar:{}", s(&src))];
    let opts = |t: &'static str| ["--chunk-size", "64K", "--backup-time", t];
    let first = ok(&backup(
        &store,
        "host/d",
        &arch,
        &opts("2024-01-01T00:00:00Z"),
    ));
    let (total, written) = new_bytes(&first);
    assert!(total > 23 << 20 && written * 10 >= total * 9, "{first}");

    let second = ok(&backup(
        &store,
        "host/d",
        &arch,
        &opts("2024-01-02T00:00:00Z"),
    ));
    let (total2, written2) = new_bytes(&second);
    eprintln!("unchanged: {written2} of {total2} bytes new");
    assert_eq!(total2, total);
    assert!(written2 * 100 < total2, "{second}");

    // Change 100 bytes in the middle of a file in the middle of the tree.
    let f = src.join("data/f30");
    let mut data = std::fs::read(&f).unwrap();
    data[128 << 10..(128 << 10) + 100].fill(0xab);
    std::fs::write(&f, &data).unwrap();
    let third = ok(&backup(
        &store,
        "host/d",
        &arch,
        &opts("2024-01-03T00:00:00Z"),
    ));
    let (total3, written3) = new_bytes(&third);
    eprintln!("one file changed: {written3} of {total3} bytes new");
    assert!(written3 > 0 && written3 * 100 < 3 * total3, "{third}");
    let stream = cat(&store, "host/d/2024-01-03T00:00:00Z", "root.pxar");
    let tree = stream::parse(&stream);
    let Kind::File { at, len } = tree[&b"data/f30"[..]].kind else {
        panic!("f30 is a file");
    };
    assert_eq!(&stream[at..at + len], &data[..]);
    let v = ok(&pbsfs(&["verify", s(&store)]));
    assert!(v.contains("3 ok, 0 failed"), "{v}");
}
