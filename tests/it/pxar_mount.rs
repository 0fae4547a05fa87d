//! pxar archives through the mount and through `pbsfs restore`: a generated tree of
//! 10,000 files and every kind of entry and metadata backed up, then compared entry by
//! entry (type, mode, owner, mtime with ns, size, content, symlink target, device,
//! xattrs, ACLs, capabilities) with what the mount shows and what restore writes, the
//! latter with hardlink counts; `diff`, `find`, `du`, `tar`, `rsync -aHAX` and `cp -a`
//! over the mounted tree; a corrupt chunk failing only the file it belongs to.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pbsfs::util::sys::{get_xattr, list_xattrs, XattrSource};

use crate::common::*;
use crate::mount_util::Mounted;
use crate::pxar_backup::{backup, build_tree, source_tree};

/// 100 folders of 100 small files (0-4 KiB), next to the special entries.
fn add_many_files(root: &Path) {
    for d in 0..100 {
        let dir = root.join(format!("many/d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let len = (d * 100 + f) % 4097;
            std::fs::write(
                dir.join(format!("f{f:03}")),
                pseudo_random(len, (d * 100 + f) as u64),
            )
            .unwrap();
        }
    }
}

/// A path's extended attributes, ACLs and capabilities included, sorted.
fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let src = XattrSource::NoFollow(p);
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = list_xattrs(src)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| get_xattr(src, &n).ok().flatten().map(|v| (n, v)))
        .collect();
    v.sort();
    v
}

/// What must match for one entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: Option<u64>,
    target: Option<PathBuf>,
    rdev: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    content: Option<pbsfs::Digest>,
    nlink: Option<u64>,
}

fn seen(p: &Path, md: &std::fs::Metadata, links: bool) -> Seen {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else {
        "file"
    };
    Seen {
        kind,
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        size: (!ft.is_dir()).then_some(md.len()),
        target: ft.is_symlink().then(|| std::fs::read_link(p).unwrap()),
        rdev: md.rdev(),
        xattrs: xattrs(p),
        content: ft
            .is_file()
            .then(|| pbsfs::Digest::of(&std::fs::read(p).unwrap())),
        nlink: (links && !ft.is_dir()).then(|| md.nlink()),
    }
}

/// Every entry below `root` (the root included, as "") as `seen` sees it.
pub(crate) fn snapshot(root: &Path, links: bool) -> BTreeMap<Vec<u8>, Seen> {
    source_tree(root)
        .into_iter()
        .map(|(rel, md)| {
            let p = root.join(OsStr::from_bytes(&rel));
            (rel, seen(&p, &md, links))
        })
        .collect()
}

pub(crate) fn assert_same(
    what: &str,
    want: &BTreeMap<Vec<u8>, Seen>,
    got: &BTreeMap<Vec<u8>, Seen>,
) {
    for (path, w) in want {
        let shown = String::from_utf8_lossy(path);
        let g = got
            .get(path)
            .unwrap_or_else(|| panic!("{what}: {shown} is missing"));
        assert_eq!(w, g, "{what}: {shown} differs");
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{what}: extra entries {extra:?}");
}

fn sh_ok(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SNAP: &str = "host/tree/2024-05-02T08:11:33Z";

#[test]
fn a_tree_reads_back_exactly_through_the_mount_and_through_restore() {
    let tmp = TempDir::new("pxar-mount");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    add_many_files(&src);
    ok(&backup(
        &store,
        "host/tree",
        &[format!("root.pxar:{}", s(&src))],
        &[
            "--backup-time",
            "2024-05-02T08:11:33Z",
            "--chunk-size",
            "64K",
        ],
    ));
    let want = snapshot(&src, false);
    assert!(want.len() > 10_000, "{} entries", want.len());

    let mp = tmp.join("mnt");
    let m = Mounted::start(&store, &mp, &[]);
    let root = m.path(&format!("{SNAP}/root.pxar"));
    assert_same("mount", &want, &snapshot(&root, false));
    // The tools people use over a mounted tree.
    sh_ok(&format!(
        "diff -r --no-dereference -x fifo -x sock {} {}",
        s(&src),
        s(&root)
    ));
    let found = sh_ok(&format!("find {} -print0 | tr -cd '\\0' | wc -c", s(&root)));
    assert_eq!(found.trim().parse::<usize>().unwrap(), want.len());
    sh_ok(&format!(
        "du -s {} && ls -lR {} > /dev/null",
        s(&root),
        s(&root)
    ));
    sh_ok(&format!("tar -cf /dev/null -C {} .", s(&root)));
    let copy = tmp.join("rsync");
    sh_ok(&format!("rsync -aHAX {}/ {}/", s(&root), s(&copy)));
    assert_same("rsync -aHAX of the mount", &want, &snapshot(&copy, false));
    let cp = tmp.join("cpa");
    sh_ok(&format!("cp -a {} {}", s(&root), s(&cp)));
    m.unmount();

    // Restore: the same, with hardlink counts.
    let out = tmp.join("restored");
    let report = ok(&pbsfs(&["restore", s(&store), SNAP, "root.pxar", s(&out)]));
    assert!(report.contains("restored"), "{report}");
    assert_same("restore", &snapshot(&src, true), &snapshot(&out, true));
    assert_eq!(std::fs::metadata(out.join("h1")).unwrap().nlink(), 3);
    // Sparse files stay sparse.
    let sparse = std::fs::metadata(out.join("sparse")).unwrap();
    assert!(sparse.blocks() * 512 < sparse.len() / 4, "{sparse:?}");
    // One subtree, one file.
    let sub = tmp.join("sub");
    ok(&pbsfs(&[
        "restore",
        s(&store),
        SNAP,
        "root.pxar",
        s(&sub),
        "--path",
        "a/b",
    ]));
    assert_eq!(std::fs::read(sub.join("c/small")).unwrap(), b"small file\n");
    let one = tmp.join("one");
    ok(&pbsfs(&[
        "restore",
        s(&store),
        SNAP,
        "root.pxar",
        s(&one),
        "--path",
        "many/d001/f002",
    ]));
    assert_eq!(
        std::fs::read(one.join("f002")).unwrap(),
        std::fs::read(src.join("many/d001/f002")).unwrap()
    );
    // A non-empty target needs --overwrite.
    let err = fails_with(
        &pbsfs(&["restore", s(&store), SNAP, "root.pxar", s(&out)]),
        2,
    );
    assert!(err.contains("--overwrite"), "{err}");
    // One file by cat.
    let small = ok_bytes(pbsfs(&["cat", s(&store), SNAP, "root.pxar/a/b/c/small"]));
    assert_eq!(small, b"small file\n");
}

#[test]
fn a_corrupt_chunk_fails_only_the_file_it_holds() {
    let tmp = TempDir::new("pxar-corrupt");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    let big = pseudo_random(2 << 20, 77);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("neighbour"), b"still here\n").unwrap();
    ok(&backup(
        &store,
        "host/tree",
        &[format!("root.pxar:{}", s(&src))],
        &[
            "--backup-time",
            "2024-05-02T08:11:33Z",
            "--chunk-size",
            "64K",
        ],
    ));
    ok(&pbsfs(&["verify", s(&store)]));
    // A chunk from the middle of `big`: its content starts well after the metadata.
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let idx = ds
        .read_index(&store.join(SNAP).join("root.pxar.didx"))
        .unwrap();
    let mid = idx.locate(1 << 20).unwrap().0;
    let digest = idx.chunk_info(mid).unwrap().digest;
    let chunk = ds.chunk_store().chunk_path(&digest);
    let mut raw = std::fs::read(&chunk).unwrap();
    raw[20] ^= 0x10;
    std::fs::write(&chunk, &raw).unwrap();

    let mp = tmp.join("mnt");
    let m = Mounted::start(&store, &mp, &[]);
    let root = m.path(&format!("{SNAP}/root.pxar"));
    let e = std::fs::read(root.join("big")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        std::fs::read(root.join("neighbour")).unwrap(),
        b"still here\n"
    );
    // Ranges of `big` before the bad chunk stay readable.
    let head = sh_ok(&format!(
        "dd if={} bs=4096 count=16 status=none | sha256sum",
        s(&root.join("big"))
    ));
    let want = sh_ok(&format!(
        "dd if={} bs=4096 count=16 status=none | sha256sum",
        s(&src.join("big"))
    ));
    assert_eq!(
        head.split_whitespace().next(),
        want.split_whitespace().next()
    );
    m.unmount();
    let out = exits(&pbsfs(&["verify", s(&store)]), 1);
    assert!(out.contains(&digest.to_hex()), "{out}");
}

/// A small valid stream: `/a.txt`, `/sub/b.txt`.
fn small_stream() -> Vec<u8> {
    use pbsfs::pxar::encoder::{Encoder, Metadata};
    use pbsfs::pxar::format::{Stat, S_IFDIR, S_IFREG};
    let meta = |mode| Metadata {
        stat: Stat {
            mode,
            mtime_secs: 1_700_000_000,
            ..Stat::default()
        },
        ..Metadata::default()
    };
    let mut e = Encoder::new(Vec::new(), &meta(S_IFDIR | 0o755)).unwrap();
    e.add_file(b"a.txt", &meta(S_IFREG | 0o644), b"alpha\n")
        .unwrap();
    e.create_directory(b"sub", &meta(S_IFDIR | 0o755)).unwrap();
    e.add_file(b"b.txt", &meta(S_IFREG | 0o644), b"beta\n")
        .unwrap();
    e.finish_directory().unwrap();
    e.finish().unwrap()
}

/// Store `stream` as `root.pxar.didx` of a new snapshot of `host/bad`, written the way
/// a backup writes one (so only the stream itself is wrong).
fn store_stream(ds: &pbsfs::Datastore, time: i64, stream: &[u8]) {
    use pbsfs::store::format::index::dynamic::DynamicIndex;
    use pbsfs::store::format::manifest::{CryptMode, FileEntry, Manifest};
    use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
    let g = BackupGroup::new(BackupNamespace::root(), BackupType::Host, "bad").unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let d = BackupDir::new(g, time).unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    let (digest, _, _) = ds.chunk_store().insert_plain(stream).unwrap();
    let idx = DynamicIndex::new(vec![(stream.len() as u64, digest)], time).unwrap();
    let path = ds.snapshot_path(&d).join("root.pxar.didx");
    pbsfs::store::files::write_index_file(&path, &idx.to_bytes(), ds.owner()).unwrap();
    let mut m = Manifest::new(&d);
    m.add_file(&FileEntry {
        filename: "root.pxar.didx".into(),
        crypt_mode: CryptMode::None,
        size: stream.len() as u64,
        csum: idx.csum,
    });
    ds.create_manifest(&d, &m, &lock).unwrap();
    crate::mount_util::release_lock(ds, &d, lock);
}

fn replace(hay: &[u8], what: &[u8], with: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(what.len())
        .position(|w| w == what)
        .expect("pattern in the stream");
    let mut v = hay.to_vec();
    v[at..at + with.len()].copy_from_slice(with);
    v
}

#[test]
fn bad_pxar_streams_are_eio_in_the_mount_and_exit_2_in_the_cli_naming_the_offset() {
    let tmp = TempDir::new("pxar-bad");
    let store = sparse_store(&tmp);
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let good = small_stream();
    // a.txt's PAYLOAD header claiming far more than the stream holds.
    let payload = pbsfs::pxar::format::PAYLOAD.to_le_bytes();
    let mut huge = payload.to_vec();
    huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 40].to_vec()),
        (
            "a name with a slash",
            replace(&good, b"b.txt\0", b"b/txt\0"),
        ),
        ("a name that is ..", replace(&good, b"sub\0", b"..\0\0")),
        (
            "a header running past its parent",
            replace(&good, &payload, &huge),
        ),
    ];
    for (i, (_, stream)) in cases.iter().enumerate() {
        store_stream(&ds, 1_700_000_000 + i as i64 * 60, stream);
    }
    let snaps: Vec<String> = std::fs::read_dir(store.join("host/bad"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.ends_with('Z').then_some(n)
        })
        .collect();
    let mut snaps = snaps;
    snaps.sort();
    assert_eq!(snaps.len(), cases.len());
    let mp = tmp.join("mnt");
    let m = Mounted::start(&store, &mp, &[]);
    for ((what, _), time) in cases.iter().zip(&snaps) {
        let snap = format!("host/bad/{time}");
        // The CLI: exit 2, the archive and an offset named.
        for target in ["root.pxar/sub/b.txt", "root.pxar/a.txt"] {
            let out = pbsfs(&["cat", s(&store), &snap, target]);
            if out.status.success() {
                continue; // this damage lies elsewhere in the stream
            }
            let err = fails_with(&out, 2);
            assert!(
                err.contains("root.pxar.didx") && err.contains("offset"),
                "{what}: {err}"
            );
        }
        let out = pbsfs(&["restore", s(&store), &snap, "root.pxar", s(&tmp.join(time))]);
        let err = fails_with(&out, 2);
        assert!(err.contains("offset"), "{what}: {err}");
        // The mount: listing or reading fails with EIO, nothing panics.
        let root = m.path(&format!("{snap}/root.pxar"));
        let listing = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ls -lR {} && cat {}/a.txt {}/sub/b.txt",
                s(&root),
                s(&root),
                s(&root)
            ))
            .output()
            .unwrap();
        assert!(!listing.status.success(), "{what}: {}", describe(&listing));
        let text = String::from_utf8_lossy(&listing.stderr);
        assert!(text.contains("Input/output error"), "{what}: {text}");
    }
    // The mount still serves a good snapshot afterwards, and unmounts cleanly.
    store_stream(&ds, 1_800_000_000, &good);
    let fine = m.path("host/bad/2027-01-15T08:00:00Z/root.pxar/sub/b.txt");
    assert_eq!(std::fs::read(fine).unwrap(), b"beta\n");
    let log = m.log_text();
    assert!(!log.contains("panicked"), "{log}");
    m.unmount();
}

/// `ls -l` asks every file for its SELinux label and its ACL. A pxar entry without a
/// label answers EOPNOTSUPP (ls stops asking for labels: half the requests of a
/// listing), one with a label still gives it; a missing ACL stays ENODATA, so the `+`
/// of a file with an ACL listed after many without one still shows.
#[test]
fn labels_are_given_where_archived_and_acls_still_mark_late_files() {
    let tmp = TempDir::new("pxar-label");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("a{i:02}")), b"x").unwrap();
    }
    std::fs::write(src.join("y-labelled"), b"l").unwrap();
    std::fs::write(src.join("z-acl"), b"a").unwrap();
    let label = "system_u:object_r:pbsfs_test_t:s0";
    sh_ok(&format!(
        "setfattr -n security.selinux -v {label} {0}/y-labelled && setfacl -m u:65534:r {0}/z-acl",
        s(&src)
    ));
    ok(&backup(
        &store,
        "host/label",
        &[format!("root.pxar:{}", s(&src))],
        &["--backup-time", "2024-05-02T08:11:33Z"],
    ));
    let m = Mounted::start(&store, &tmp.join("mnt"), &[]);
    let root = m.path("host/label/2024-05-02T08:11:33Z/root.pxar");
    let getfattr = |name: &str, file: &str| {
        Command::new("getfattr")
            .args(["--only-values", "-n", name])
            .arg(root.join(file))
            .output()
            .unwrap()
    };
    let none = getfattr("security.selinux", "a00");
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("Operation not supported"),
        "{}",
        describe(&none)
    );
    let got = getfattr("security.selinux", "y-labelled");
    assert_eq!(
        stdout(&got).trim_end_matches('\0'),
        label,
        "{}",
        describe(&got)
    );
    let acl = getfattr("system.posix_acl_access", "a00");
    assert!(
        stderr(&acl).contains("No such attribute"),
        "{}",
        describe(&acl)
    );
    let ls = sh_ok(&format!("ls -l {}", s(&root)));
    let mode = |name: &str| {
        let line = ls.lines().find(|l| l.ends_with(name)).unwrap();
        line.split(' ').next().unwrap().to_string()
    };
    assert_eq!(mode("z-acl"), "-rw-r--r--+", "{ls}");
    assert_eq!(mode("a49"), "-rw-r--r--", "{ls}");
    m.unmount();
}
