//! The vfs driven without a kernel: random reads equal the source bytes, inode numbers
//! are stable, and the commit rules of ARCHITECTURE §3 (commit exactly at flush after a
//! write, fsync when dirty, release when still dirty, the next open, a rename), observed
//! through the manifest file's inode (every transaction replaces it).

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;

use pbsfs::store::format::blob;
use pbsfs::store::format::names::BackupNamespace;
use pbsfs::vfs::{Caller, Options, SetAttr, Vfs};
use pbsfs::Datastore;

use crate::common::{pseudo_random, TempDir};
use crate::mount_util::*;

const W: i32 = libc::O_WRONLY;
const TRUNC: i32 = libc::O_WRONLY | libc::O_TRUNC;

fn vfs(f: &Fixture, read_only: bool) -> Vfs {
    let ds = Datastore::open(&f.store, None).unwrap();
    Vfs::new(
        ds,
        Options {
            read_only,
            cache_size: 1 << 20,
            ns: BackupNamespace::root(),
        },
    )
    .unwrap()
}

fn walk(v: &Vfs, path: &str) -> u64 {
    path.split('/')
        .filter(|c| !c.is_empty())
        .fold(v.root_ino(), |ino, c| {
            v.lookup(ino, OsStr::new(c))
                .unwrap_or_else(|e| panic!("{path}: {c}: {e}"))
                .attr
                .ino
        })
}

fn caller(pid: u32) -> Caller {
    Caller {
        uid: 0,
        gid: 0,
        pid,
    }
}

const SNAP: &str = "vm/100/2024-05-02T08:11:33Z";

#[test]
fn random_reads_equal_the_source_and_chunks_are_read_once() {
    let tmp = TempDir::new("vfs-read");
    let f = fixture(&tmp);
    let v = vfs(&f, false);
    for (path, src) in [
        (format!("{SNAP}/drive-scsi0.img"), &f.img1),
        (
            "vm/100/2024-05-03T08:11:33Z/drive-scsi1.img".to_string(),
            &f.img2,
        ),
    ] {
        let ino = walk(&v, &path);
        assert_eq!(v.getattr(ino).unwrap().attr.size, src.len() as u64);
        let fh = v.open(ino, libc::O_RDONLY, caller(1)).unwrap().fh;
        let rnd = pseudo_random(8 * 300, 9);
        for i in 0..300 {
            let r = u64::from_le_bytes(rnd[i * 8..i * 8 + 8].try_into().unwrap());
            let len = src.len() as u64;
            let off = r % (len + 100);
            let size = ((r >> 32) % 300_000) as u32;
            let got = v.read(fh, off, size).unwrap();
            let start = (off as usize).min(src.len());
            let end = (off as usize + size as usize).min(src.len());
            assert_eq!(got, &src[start..end], "{path} at {off}+{size}");
        }
        // Edges: chunk boundaries, the last byte, EOF.
        for off in [
            0u64,
            65535,
            65536,
            16383,
            16384,
            len_minus(src, 1),
            src.len() as u64,
        ] {
            let got = v.read(fh, off, 2).unwrap();
            let start = (off as usize).min(src.len());
            assert_eq!(got, &src[start..(start + 2).min(src.len())]);
        }
        v.release(fh);
    }
    assert!(v.chunk_cache().cached_bytes() <= 1 << 20);
    // A chunk in the cache is not read again. A fresh vfs, so that the first read is
    // one from disk (the counter counts) and the second one is not. Neither read starts
    // where the previous one ended, so no readahead runs behind the counter's back.
    let v = vfs(&f, false);
    let ino = walk(&v, &format!("{SNAP}/drive-scsi0.img"));
    let fh = v.open(ino, libc::O_RDONLY, caller(1)).unwrap().fh;
    assert_eq!(v.chunk_cache().disk_reads(), 0);
    assert_eq!(v.read(fh, 1000, 100).unwrap(), &f.img1[1000..1100]);
    let reads = v.chunk_cache().disk_reads();
    assert_eq!(reads, 1, "the first read of a chunk reads it from disk");
    assert!(v.chunk_cache().cached_bytes() > 0);
    assert_eq!(v.read(fh, 10, 100).unwrap(), &f.img1[10..110]);
    assert_eq!(v.chunk_cache().disk_reads(), reads);
    v.release(fh);
}

fn len_minus(v: &[u8], n: usize) -> u64 {
    (v.len() - n) as u64
}

#[test]
fn inode_numbers_are_stable_and_distinct() {
    let tmp = TempDir::new("vfs-ino");
    let f = fixture(&tmp);
    let v = vfs(&f, false);
    let paths = [
        "vm",
        "vm/100",
        SNAP,
        "vm/100/2024-05-03T08:11:33Z",
        &format!("{SNAP}/notes"),
        &format!("{SNAP}/drive-scsi0.img"),
        "vm/100/2024-05-03T08:11:33Z/drive-scsi0.img",
        "vm/100/notes",
        "ns/prod/host/web",
    ];
    let first: Vec<u64> = paths.iter().map(|p| walk(&v, p)).collect();
    let mut uniq = first.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), first.len());
    let again: Vec<u64> = paths.iter().map(|p| walk(&v, p)).collect();
    assert_eq!(first, again);
    for (p, ino) in paths.iter().zip(&first) {
        assert_eq!(v.getattr(*ino).unwrap().attr.ino, *ino, "{p}");
    }
    assert!(v.lookup(walk(&v, SNAP), OsStr::new("nothing")).is_err());
    assert_eq!(
        v.lookup(walk(&v, "vm"), OsStr::new("999"))
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

/// The manifest blob's inode: every transaction replaces the file.
fn version(f: &Fixture) -> u64 {
    std::fs::metadata(f.ds.snapshot_path(&f.d1).join("index.json.blob"))
        .unwrap()
        .ino()
}

fn notes(f: &Fixture) -> String {
    f.ds.load_manifest(&f.d1)
        .unwrap()
        .notes()
        .unwrap_or("")
        .to_string()
}

/// Assert that `step` commits (`true`) or not.
fn step<T>(f: &Fixture, commits: bool, what: &str, step: impl FnOnce() -> T) -> T {
    let before = version(f);
    let out = step();
    assert_eq!(version(f) != before, commits, "{what}");
    out
}

#[test]
fn commit_points_follow_the_rules() {
    let tmp = TempDir::new("vfs-commit");
    let f = fixture(&tmp);
    let v = vfs(&f, false);
    let ino = walk(&v, &format!("{SNAP}/notes"));
    // echo x > notes: OPEN(TRUNC) F W F R -> one commit, at the second flush.
    let fh = step(&f, false, "open", || {
        v.open(ino, TRUNC, caller(7)).unwrap().fh
    });
    step(&f, false, "flush before write", || v.flush(fh).unwrap());
    step(&f, false, "write", || v.write(fh, 0, b"x\n").unwrap());
    step(&f, true, "flush after write", || v.flush(fh).unwrap());
    step(&f, false, "release", || v.release(fh));
    assert_eq!(notes(&f), "x\n");
    // echo y >> notes: appends at the end whatever the offset.
    let fh = v
        .open(ino, libc::O_WRONLY | libc::O_APPEND, caller(7))
        .unwrap()
        .fh;
    v.flush(fh).unwrap();
    v.write(fh, 0, b"y\n").unwrap();
    step(&f, true, "flush", || v.flush(fh).unwrap());
    v.release(fh);
    assert_eq!(notes(&f), "x\ny\n");
    // printf '' > notes: the truncation commits at release.
    let fh = v.open(ino, TRUNC, caller(7)).unwrap().fh;
    step(&f, false, "flushes", || {
        v.flush(fh).unwrap();
        v.flush(fh).unwrap()
    });
    step(&f, true, "release", || v.release(fh));
    assert_eq!(notes(&f), "");
    // ... or at the next open of the file, before that release arrives.
    v.open(ino, TRUNC, caller(7))
        .and_then(|o| v.write(o.fh, 0, b"z").map(|_| o))
        .and_then(|o| v.flush(o.fh).map(|_| o))
        .map(|o| v.release(o.fh))
        .unwrap();
    let fh = v.open(ino, TRUNC, caller(8)).unwrap().fh;
    v.flush(fh).unwrap();
    let rfh = step(&f, true, "another open", || {
        v.open(ino, libc::O_RDONLY, caller(9)).unwrap().fh
    });
    assert_eq!(v.read(rfh, 0, 10).unwrap(), b"");
    step(&f, false, "release after the early commit", || {
        v.release(fh)
    });
    v.release(rfh);
    // truncate -s 0: SETATTR(size, fh) F R.
    v.open(ino, TRUNC, caller(7))
        .and_then(|o| v.write(o.fh, 0, b"long").map(|_| o))
        .and_then(|o| v.flush(o.fh).map(|_| o))
        .map(|o| v.release(o.fh))
        .unwrap();
    let fh = v.open(ino, W, caller(7)).unwrap().fh;
    let set = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    step(&f, false, "ftruncate", || {
        v.setattr(ino, Some(fh), set, caller(7)).unwrap()
    });
    step(&f, false, "flush", || v.flush(fh).unwrap());
    step(&f, true, "release", || v.release(fh));
    // vim -es: OPEN(W) SETATTR(0) W FSYNC SETATTR(mode) F R: one commit, at fsync.
    let fh = v.open(ino, W, caller(7)).unwrap().fh;
    v.setattr(ino, Some(fh), set, caller(7)).unwrap();
    v.write(fh, 0, b"vim\n").unwrap();
    step(&f, true, "fsync", || v.fsync(fh).unwrap());
    let mode = SetAttr {
        mode: Some(0o100644),
        ..SetAttr::default()
    };
    step(&f, false, "fchmod, flush, release", || {
        v.setattr(ino, Some(fh), mode, caller(7)).unwrap();
        v.flush(fh).unwrap();
        v.release(fh)
    });
    assert_eq!(notes(&f), "vim\n");
    // An open for write closed without a change commits nothing.
    step(&f, false, "probe", || {
        let fh = v.open(ino, W, caller(7)).unwrap().fh;
        v.flush(fh).unwrap();
        v.release(fh)
    });
    // truncate(2) by path: the caller's open write handle takes it...
    let fh = v.open(ino, W, caller(11)).unwrap().fh;
    step(&f, false, "path truncate with a handle", || {
        v.setattr(ino, None, set, caller(11)).unwrap()
    });
    step(&f, true, "release", || v.release(fh));
    // ... else it is a save of its own.
    v.open(ino, TRUNC, caller(7))
        .and_then(|o| v.write(o.fh, 0, b"abc").map(|_| o))
        .and_then(|o| v.flush(o.fh).map(|_| o))
        .map(|o| v.release(o.fh))
        .unwrap();
    let two = SetAttr {
        size: Some(2),
        ..SetAttr::default()
    };
    step(&f, true, "path truncate alone", || {
        v.setattr(ino, None, two, caller(12)).unwrap()
    });
    assert_eq!(notes(&f), "ab");
    assert_eq!(v.getattr(ino).unwrap().attr.size, 2);
}

#[test]
fn rejected_writes_poison_the_handle_and_scratch_renames_commit() {
    let tmp = TempDir::new("vfs-poison");
    let f = fixture(&tmp);
    let v = vfs(&f, false);
    let snap = walk(&v, SNAP);
    let vs = walk(&v, &format!("{SNAP}/verify_state"));
    let ino = walk(&v, &format!("{SNAP}/notes"));
    let fh = v.open(vs, TRUNC, caller(1)).unwrap().fh;
    step(&f, false, "garbage", || {
        assert_eq!(
            v.write(fh, 0, b"garbage\n").unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(v.write(fh, 0, b"ok").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(v.flush(fh).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(v.fsync(fh).unwrap_err().errno(), libc::EINVAL);
        v.release(fh)
    });
    // Invalid JSON passes the write check and fails at flush; nothing is written.
    let fh = v.open(vs, TRUNC, caller(1)).unwrap().fh;
    v.write(fh, 0, b"{\"state\": \"ok\"}").unwrap();
    step(&f, false, "bad json", || {
        assert_eq!(v.flush(fh).unwrap_err().errno(), libc::EINVAL);
        v.release(fh)
    });
    // Notes: invalid UTF-8 (an incomplete sequence at the end is fine), and the limit.
    let fh = v.open(ino, TRUNC, caller(1)).unwrap().fh;
    v.write(fh, 0, &"ü".as_bytes()[..1]).unwrap();
    v.write(fh, 1, &"ü".as_bytes()[1..]).unwrap();
    assert_eq!(
        v.write(fh, 2, &[0xff, b'a']).unwrap_err().errno(),
        libc::EILSEQ
    );
    step(&f, false, "poisoned release", || v.release(fh));
    let fh = v.open(ino, TRUNC, caller(1)).unwrap().fh;
    let big = vec![b'a'; pbsfs::store::format::notes::MAX_NOTES_LEN];
    v.write(fh, 0, &big).unwrap();
    assert_eq!(
        v.write(fh, big.len() as u64, b"b").unwrap_err().errno(),
        libc::EFBIG
    );
    step(&f, false, "poisoned release", || v.release(fh));
    // notes cannot be removed or renamed away.
    assert_eq!(
        v.unlink(snap, OsStr::new("notes")).unwrap_err().errno(),
        libc::EPERM
    );
    assert_eq!(
        v.rename(snap, OsStr::new("notes"), snap, OsStr::new("x"), 0)
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    // Scratch files: O_EXCL, then rename over notes is one save.
    let (e, o) = v
        .create(
            snap,
            OsStr::new("sed1"),
            0o600,
            libc::O_RDWR | libc::O_EXCL,
            caller(1),
        )
        .unwrap();
    assert_eq!(
        v.create(snap, OsStr::new("sed1"), 0o600, libc::O_EXCL, caller(1))
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    v.write(o.fh, 0, b"renamed\n").unwrap();
    step(&f, false, "scratch flush", || v.flush(o.fh).unwrap());
    v.release(o.fh);
    assert_eq!(v.getattr(e.attr.ino).unwrap().attr.size, 8);
    step(&f, true, "rename over notes", || {
        v.rename(snap, OsStr::new("sed1"), snap, OsStr::new("notes"), 0)
            .unwrap()
    });
    assert_eq!(notes(&f), "renamed\n");
    assert_eq!(
        v.lookup(snap, OsStr::new("sed1")).unwrap_err().errno(),
        libc::ENOENT
    );
    // Scratch files only where editors work; the cap gives ENOSPC.
    assert_eq!(
        v.create(walk(&v, "vm"), OsStr::new("x"), 0o644, 0, caller(1))
            .unwrap_err()
            .errno(),
        libc::EACCES
    );
    // None is left (sed1 was renamed away): exactly MAX_FILES fit, the next does not.
    let make = |i: usize| {
        v.create(
            snap,
            OsStr::new(&format!("s{i}")),
            0o600,
            libc::O_EXCL,
            caller(1),
        )
        .map(|(_, o)| v.release(o.fh))
    };
    for i in 0..pbsfs::vfs::scratch::MAX_FILES {
        make(i).unwrap_or_else(|e| panic!("scratch file {i}: {e}"));
    }
    assert_eq!(
        make(pbsfs::vfs::scratch::MAX_FILES).unwrap_err().errno(),
        libc::ENOSPC
    );
    // Read-only files of a writable mount: EACCES.
    let img = walk(&v, &format!("{SNAP}/drive-scsi0.img"));
    assert_eq!(v.open(img, W, caller(1)).unwrap_err().errno(), libc::EACCES);
}

#[test]
fn a_read_only_vfs_refuses_every_write_with_erofs() {
    let tmp = TempDir::new("vfs-ro");
    let f = fixture(&tmp);
    let v = vfs(&f, true);
    let snap = walk(&v, SNAP);
    let ino = walk(&v, &format!("{SNAP}/notes"));
    assert_eq!(v.getattr(ino).unwrap().attr.perm, 0o444);
    for e in [
        v.open(ino, TRUNC, caller(1)).unwrap_err(),
        v.create(snap, OsStr::new("x"), 0o644, 0, caller(1))
            .unwrap_err(),
        v.setattr(
            ino,
            None,
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
            caller(1),
        )
        .unwrap_err(),
        v.open(walk(&v, &format!("{SNAP}/drive-scsi0.img")), W, caller(1))
            .unwrap_err(),
        v.unlink(snap, OsStr::new("x")).unwrap_err(),
    ] {
        assert_eq!(e.errno(), libc::EROFS, "{e}");
    }
    let fh = v.open(ino, libc::O_RDONLY, caller(1)).unwrap().fh;
    assert_eq!(v.read(fh, 0, 100).unwrap(), b"first\n");
}

#[test]
fn an_open_archive_keeps_forget_away() {
    let tmp = TempDir::new("vfs-lock");
    let f = fixture(&tmp);
    let v = vfs(&f, false);
    let ino = walk(&v, &format!("{SNAP}/drive-scsi0.img"));
    let fh = v.open(ino, libc::O_RDONLY, caller(1)).unwrap().fh;
    assert_eq!(
        f.ds.destroy_snapshot(&f.d1).unwrap_err().errno(),
        libc::EAGAIN
    );
    v.release(fh);
    f.ds.destroy_snapshot(&f.d1).unwrap();
    assert_eq!(
        v.lookup(walk(&v, "vm/100"), OsStr::new("2024-05-02T08:11:33Z"))
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

/// Names listed in a directory, without `.` and `..`.
fn names(v: &Vfs, ino: u64) -> Vec<String> {
    let fh = v.opendir(ino).unwrap();
    let out = v
        .readdir(ino, fh, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    v.releasedir(fh);
    out
}

fn read_all(v: &Vfs, ino: u64) -> pbsfs::Result<Vec<u8>> {
    let fh = v.open(ino, libc::O_RDONLY, caller(1))?.fh;
    let data = v.read(fh, 0, 1 << 24);
    v.release(fh);
    data
}

/// Before the fix, a file beside the manifest was served as an archive (unchecked).
#[test]
fn a_snapshot_shows_what_its_manifest_lists_plus_its_client_log() {
    let tmp = TempDir::new("vfs-listed");
    let f = fixture(&tmp);
    let dir = f.ds.snapshot_path(&f.d1);
    std::fs::copy(dir.join("drive-scsi0.img.fidx"), dir.join("extra.img.fidx")).unwrap();
    std::fs::write(
        dir.join("stray.conf.blob"),
        blob::encode(b"stray", true).unwrap(),
    )
    .unwrap();
    let log = b"task log\nline 2\n".to_vec();
    std::fs::write(
        dir.join("client.log.blob"),
        blob::encode(&log, true).unwrap(),
    )
    .unwrap();
    let v = vfs(&f, false);
    let snap = walk(&v, SNAP);
    let mut listed = names(&v, snap);
    listed.sort();
    assert_eq!(
        listed,
        [
            "client.log",
            "drive-scsi0.img",
            "manifest.json",
            "notes",
            "qemu-server.conf",
            "verify_state"
        ]
    );
    for hidden in ["extra.img", "stray.conf", "extra.img.fidx"] {
        assert_eq!(
            v.lookup(snap, OsStr::new(hidden)).unwrap_err().errno(),
            libc::ENOENT,
            "{hidden}"
        );
    }
    let ino = walk(&v, &format!("{SNAP}/client.log"));
    assert_eq!(v.getattr(ino).unwrap().attr.size, log.len() as u64);
    assert_eq!(read_all(&v, ino).unwrap(), log);
    // client.log is never in a manifest, but its CRC is still checked.
    let mut raw = std::fs::read(dir.join("client.log.blob")).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x40;
    std::fs::write(dir.join("client.log.blob"), &raw).unwrap();
    let v = vfs(&f, false);
    let ino = walk(&v, &format!("{SNAP}/client.log"));
    assert_eq!(read_all(&v, ino).unwrap_err().errno(), libc::EIO);
}

#[test]
fn a_blob_or_index_that_disagrees_with_the_manifest_gives_eio() {
    let tmp = TempDir::new("vfs-mismatch");
    let f = fixture(&tmp);
    let dir = f.ds.snapshot_path(&f.d1);
    // A valid blob and a valid index, but not the ones the manifest names.
    std::fs::write(
        dir.join("qemu-server.conf.blob"),
        blob::encode(b"memory: 4096\n", true).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        f.ds.snapshot_path(&f.d2).join("drive-scsi1.img.fidx"),
        dir.join("drive-scsi0.img.fidx"),
    )
    .unwrap();
    let v = vfs(&f, false);
    for name in ["qemu-server.conf", "drive-scsi0.img"] {
        let ino = walk(&v, &format!("{SNAP}/{name}"));
        let e = read_all(&v, ino).unwrap_err();
        assert_eq!(e.errno(), libc::EIO, "{name}: {e}");
        assert!(e.to_string().contains("manifest"), "{e}");
    }
}

/// Before the fix, an archive of a snapshot whose manifest is damaged was served
/// without any check against it.
#[test]
fn a_damaged_manifest_still_lists_the_files_and_their_reads_give_eio() {
    let tmp = TempDir::new("vfs-badmanifest");
    let f = fixture(&tmp);
    let manifest = f.ds.snapshot_path(&f.d1).join("index.json.blob");
    let mut raw = std::fs::read(&manifest).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    std::fs::write(&manifest, &raw).unwrap();
    let v = vfs(&f, false);
    let snap = walk(&v, SNAP);
    let listed = names(&v, snap);
    for name in ["notes", "drive-scsi0.img", "qemu-server.conf"] {
        assert!(listed.iter().any(|n| n == name), "{name} in {listed:?}");
    }
    for name in [
        "drive-scsi0.img",
        "qemu-server.conf",
        "notes",
        "manifest.json",
    ] {
        let ino = walk(&v, &format!("{SNAP}/{name}"));
        let e = read_all(&v, ino).unwrap_err();
        assert_eq!(e.errno(), libc::EIO, "{name}: {e}");
    }
    // The other snapshot is untouched by the damage.
    let ino = walk(&v, "vm/100/2024-05-03T08:11:33Z/drive-scsi0.img");
    assert_eq!(read_all(&v, ino).unwrap(), f.img1);
}

/// Before the fix, the mount remembered a size per archive and an entry per logged
/// error for ever; its tables are now bounded whatever is browsed.
#[test]
fn browsing_many_snapshots_keeps_the_mount_tables_bounded() {
    let tmp = TempDir::new("vfs-bounded");
    let f = fixture(&tmp);
    let n = pbsfs::vfs::meta::MAX_VIEWS + 40;
    for i in 0..n {
        let mut s = SnapSpec::vm("many", T1 + i as i64 * 60);
        s.blobs = vec![("a.conf", vec![b'x'; 10])];
        make_snapshot(&f.ds, &s);
    }
    let v = vfs(&f, false);
    let group = walk(&v, "vm/many");
    let snaps: Vec<String> = names(&v, group)
        .into_iter()
        .filter(|n| n.ends_with('Z'))
        .collect();
    assert_eq!(snaps.len(), n);
    for s in &snaps {
        let snap = v.lookup(group, OsStr::new(s)).unwrap().attr.ino;
        let conf = v.lookup(snap, OsStr::new("a.conf")).unwrap();
        assert_eq!(conf.attr.size, 10);
        let (views, sizes) = v.memo_entries();
        assert!(views <= pbsfs::vfs::meta::MAX_VIEWS, "{views} views");
        assert!(sizes <= pbsfs::vfs::MAX_SIZES, "{sizes} sizes");
    }
    assert_eq!(
        v.memo_entries(),
        (pbsfs::vfs::meta::MAX_VIEWS, pbsfs::vfs::MAX_SIZES)
    );
}

/// A folder read without a handle (the kernel skips OPENDIR once it answers ENOSYS),
/// in pieces as the kernel continues a listing: the same entries at the same offsets as
/// with a handle, also when a piece comes after the kept listing was dropped (a read at
/// the end drops it), and a new listing at offset 0 shows a change.
#[test]
fn folders_list_the_same_without_a_handle_in_pieces() {
    use pbsfs::vfs::NO_HANDLE;
    let tmp = TempDir::new("vfs-nohandle");
    let f = fixture(&tmp);
    let v = vfs(&f, false);
    let ino = walk(&v, SNAP);
    let whole = |v: &Vfs| -> Vec<(String, u64)> {
        let fh = v.opendir(ino).unwrap();
        let l = v.readdir(ino, fh, 0).unwrap();
        v.releasedir(fh);
        l.into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.next_offset))
            .collect()
    };
    let want = whole(&v);
    assert!(want.len() > 4, "{want:?}");
    let piece = |off: u64| -> Vec<(String, u64)> {
        v.readdir(ino, NO_HANDLE, off)
            .unwrap()
            .into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.next_offset))
            .collect()
    };
    // In pieces: offset 0, then continuing from the last offset each piece returned.
    let mut got = Vec::new();
    let mut off = 0;
    loop {
        let p = piece(off);
        if p.is_empty() {
            break;
        }
        let take: Vec<_> = p.into_iter().take(2).collect();
        off = take.last().unwrap().1;
        got.extend(take);
    }
    assert_eq!(got, want);
    // The end dropped the kept listing: a continuation reads the folder again.
    assert_eq!(piece(3), want[3..].to_vec());
    // A scratch file made meanwhile shows in the next listing from offset 0.
    let (_, made) = v
        .create(ino, OsStr::new(".notes.swp"), 0o600, W, caller(7))
        .unwrap();
    v.release(made.fh);
    assert!(piece(0).iter().any(|(n, _)| n == ".notes.swp"));
    assert_eq!(piece(0), whole(&v));
}

/// A group folder of many snapshots is probed on several threads: its listing still
/// shows exactly the finished snapshots (a manifest present), in time order, `latest`
/// naming the newest finished one, and nothing for running snapshots or stray entries.
#[test]
fn a_group_of_many_snapshots_lists_exactly_the_finished_ones() {
    let tmp = TempDir::new("vfs-many");
    let f = fixture(&tmp);
    for i in 0..70 {
        make_snapshot(&f.ds, &SnapSpec::vm("many", T1 + i as i64 * 60));
    }
    let group_dir = f.store.join("vm/many");
    let mut on_disk: Vec<String> = std::fs::read_dir(&group_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with('Z'))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk.len(), 70, "{on_disk:?}");
    // Every 7th is still running (no manifest), the newest among them.
    for name in on_disk.iter().step_by(7).chain(on_disk.last()) {
        std::fs::remove_file(group_dir.join(name).join("index.json.blob")).unwrap();
    }
    std::fs::create_dir(group_dir.join("not-a-snapshot")).unwrap();
    std::fs::write(group_dir.join("2024-01-01T00:00:00Z"), b"a file").unwrap();
    let want: Vec<String> = (on_disk.iter().enumerate())
        .filter(|(i, _)| i % 7 != 0 && *i != 69)
        .map(|(_, n)| n.clone())
        .collect();
    let v = vfs(&f, true);
    let group = walk(&v, "vm/many");
    let listed: Vec<String> = names(&v, group)
        .into_iter()
        .filter(|n| n.ends_with('Z'))
        .collect();
    assert_eq!(listed, want);
    let latest = v.lookup(group, OsStr::new("latest")).unwrap().attr.ino;
    assert_eq!(v.readlink(latest).unwrap(), want.last().unwrap().as_bytes());
}
