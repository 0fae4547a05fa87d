//! The pxar decoder on the real streams PBS wrote (`../shared/fixtures/pbs-upstream`, read
//! in place): both metadata streams decode completely, their goodbye tables checked
//! independently of the decoder, and the data stream's payload references lie inside
//! its payload index. Absent fixtures count as SKIPPED (see `common::fixtures_dir`).
//! A split pair pbsfs writes for a tree of the fixture's shape passes the same checks.

use std::path::Path;

use pbsfs::pxar::decoder::{Archive, Entry, EntryKind};
use pbsfs::pxar::format::{self, GoodbyeItem, GOODBYE, GOODBYE_TAIL_MARKER, S_IFDIR, S_IFREG};
use pbsfs::store::format::index::dynamic::DynamicIndex;
use pbsfs::store::format::index::Index;
use pbsfs::Error;

use crate::common::{fixtures_dir, ok_bytes, pbsfs, pbsfs_ok, s, sparse_store, TempDir};

const MIB: u64 = 1 << 20;
const PAYLOAD_STREAM_LEN: u64 = 104_859_232;

fn open(dir: &Path, name: &str) -> (Vec<u8>, Archive<Vec<u8>>) {
    let raw = std::fs::read(dir.join(name)).unwrap();
    let ar = Archive::open(raw.clone(), None, name).expect("a real PBS stream opens");
    (raw, ar)
}

fn u64_at(raw: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(raw[at as usize..at as usize + 8].try_into().unwrap())
}

/// Check `dir`'s goodbye table from the raw bytes, without the decoder: a GOODBYE of
/// n + 1 items, the tail last (its offset back to the ENTRY, or for the root to the
/// stream start), the items in the Eytzinger order of their sorted hashes, each the
/// hash of a child's name and pointing at that child's FILENAME. Returns each child's
/// goodbye size by name.
fn check_goodbye(raw: &[u8], dir: &Entry, children: &[Entry], root: bool) -> Vec<(Vec<u8>, u64)> {
    let gb = dir.dir().unwrap().goodbye_offset();
    let n = children.len();
    assert_eq!(u64_at(raw, gb), GOODBYE);
    let size = u64_at(raw, gb + 8);
    assert_eq!(size, 16 + 24 * (n as u64 + 1), "{n} items and the tail");
    let item = |i: usize| {
        let at = (gb + 16 + 24 * i as u64) as usize;
        GoodbyeItem::parse(&raw[at..at + 24])
    };
    let tail = item(n);
    assert_eq!((tail.hash, tail.size), (GOODBYE_TAIL_MARKER, size));
    let back = if root {
        gb
    } else {
        gb - (dir.offset + 16 + dir.name.len() as u64 + 1)
    };
    assert_eq!(
        tail.offset, back,
        "the tail reaches back to the ENTRY (the root: to 0)"
    );
    let mut hashes: Vec<u64> = (0..n).map(|i| item(i).hash).collect();
    hashes.sort();
    let laid: Vec<u64> = format::goodbye_order(n)
        .into_iter()
        .map(|s| hashes[s])
        .collect();
    assert_eq!(
        laid,
        (0..n).map(|i| item(i).hash).collect::<Vec<_>>(),
        "Eytzinger order"
    );
    let mut sizes = Vec::new();
    for i in 0..n {
        let it = item(i);
        let child = children
            .iter()
            .find(|c| c.offset == gb - it.offset)
            .unwrap_or_else(|| panic!("goodbye item {i} points at no child"));
        assert_eq!(it.hash, format::hash(&child.name));
        sizes.push((child.name.clone(), it.size));
    }
    sizes.sort();
    sizes
}

/// Decode all of `name`: 111 entries, names sorted, tables consistent; the files'
/// payload references `(offset, size)`.
fn decode_completely(dir: &Path, name: &str, sizes_count_payload: bool) -> Vec<(u64, u64)> {
    let (raw, ar) = open(dir, name);
    assert_eq!(ar.version(), 2);
    let root = ar.root().unwrap();
    assert_eq!(root.stat.file_type(), S_IFDIR);
    let folders = ar.list(&root).unwrap();
    let names = |es: &[Entry]| es.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    let want: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("folder_{i}").into_bytes())
        .collect();
    assert_eq!(names(&folders), want);
    for (name, size) in check_goodbye(&raw, &root, &folders, true) {
        let f = folders.iter().find(|f| f.name == name).unwrap();
        assert_eq!(size, 1471, "{name:?}");
        assert_eq!(
            size,
            ar.list(f).unwrap().iter().map(|_| 111).sum::<u64>() + 25 + 56 + 280
        );
    }
    let mut count = 1;
    let mut refs = Vec::new();
    for folder in &folders {
        count += 1;
        assert_eq!(folder.stat.file_type(), S_IFDIR);
        assert_eq!((folder.stat.uid, folder.stat.gid), (1000, 1000));
        assert_eq!(
            ar.lookup(&root, &folder.name).unwrap().as_ref(),
            Some(folder)
        );
        let files = ar.list(folder).unwrap();
        let want: Vec<Vec<u8>> = (0..10).map(|i| format!("file_{i}").into_bytes()).collect();
        assert_eq!(names(&files), want);
        assert!(
            files.windows(2).all(|w| w[0].name < w[1].name),
            "names sorted"
        );
        for (_, size) in check_goodbye(&raw, folder, &files, false) {
            let meta = 23 + 56 + 32;
            assert_eq!(
                size,
                if sizes_count_payload {
                    meta + MIB
                } else {
                    meta
                }
            );
        }
        for f in &files {
            count += 1;
            assert_eq!(f.stat.file_type(), S_IFREG);
            let EntryKind::File { size, payload } = &f.kind else {
                panic!("{f:?}")
            };
            assert_eq!(*size, MIB);
            assert!(payload.is_ref());
            refs.push((payload.offset(), *size));
            assert_eq!(ar.lookup(folder, &f.name).unwrap().as_ref(), Some(f));
            let path = [&folder.name[..], b"/", &f.name].concat();
            assert_eq!(ar.lookup_path(&path).unwrap().as_ref(), Some(f));
        }
        assert_eq!(ar.lookup(folder, b"file_10").unwrap(), None);
    }
    assert_eq!(count, 111);
    // Without its payload stream a file cannot be read: the caller's mistake, said so.
    let f = ar.lookup_path(b"folder_0/file_0").unwrap().unwrap();
    let e = ar.read(&f, 0, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
    refs
}

#[test]
fn the_data_stream_decodes_completely_and_its_refs_lie_in_the_payload_index() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let (_, ar) = open(&dir, "backup-client-pxar-data.mpxar");
    assert_eq!(ar.prelude(), None);
    let mut refs = decode_completely(&dir, "backup-client-pxar-data.mpxar", true);
    let raw = std::fs::read(dir.join("backup-client-pxar-data.ppxar.didx")).unwrap();
    let idx = Index::parse(&raw).unwrap();
    assert_eq!(idx.size(), PAYLOAD_STREAM_LEN);
    refs.sort();
    assert_eq!(refs[0].0, 16, "right after the payload start marker");
    for w in refs.windows(2) {
        assert!(
            w[0].0 + 16 + w[0].1 <= w[1].0,
            "payloads do not overlap: {w:?}"
        );
    }
    for (off, size) in &refs {
        assert!(off + 16 + size <= idx.size(), "{off} + {size}");
    }
}

#[test]
fn the_expected_stream_with_a_prelude_decodes_completely() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let (_, ar) = open(&dir, "backup-client-pxar-expected.mpxar");
    assert!(ar.prelude().is_some());
    assert_eq!(
        ar.root().unwrap().offset,
        40,
        "after FORMAT_VERSION and PRELUDE"
    );
    decode_completely(&dir, "backup-client-pxar-expected.mpxar", false);
}

#[test]
fn the_real_pbs_dynamic_index_parses() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let raw = std::fs::read(dir.join("backup-client-pxar-data.ppxar.didx")).unwrap();
    let idx = DynamicIndex::parse(&raw).expect("real PBS didx parses, csum valid");
    assert_eq!(idx.chunk_count(), 100);
    assert_eq!(idx.size(), PAYLOAD_STREAM_LEN);
    assert_eq!(idx.ctime, 1_715_091_951);
    assert_eq!(idx.to_bytes(), raw, "re-encoding is byte-exact");
    let last = idx.chunk_info(99).unwrap();
    assert_eq!(idx.locate(last.start), Some((99, 0)));
}

/// The same decoder test on a split pair pbsfs wrote: a tree shaped as the fixture's (10
/// folders of 10 files of 1 MiB, uid and gid 1000), backed up in `data` mode, must give
/// the very same item sizes, goodbye tables and payload references as PBS's stream.
#[test]
fn a_split_archive_written_by_pbsfs_passes_the_same_decoder_test() {
    let tmp = TempDir::new("decode-own-split");
    let src = tmp.0.join("src");
    for i in 0..10 {
        let folder = src.join(format!("folder_{i}"));
        std::fs::create_dir_all(&folder).unwrap();
        for j in 0..10 {
            let path = folder.join(format!("file_{j}"));
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(MIB).unwrap();
            std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        }
        std::os::unix::fs::chown(&folder, Some(1000), Some(1000)).unwrap();
    }
    let store = sparse_store(&tmp);
    let arg = format!("root.pxar:{}", s(&src));
    pbsfs_ok(&[
        "backup",
        s(&store),
        "host/own",
        &arg,
        "--backup-time",
        "2024-05-02T08:11:33Z",
        "--change-detection-mode",
        "data",
    ]);
    let snap = "host/own/2024-05-02T08:11:33Z";
    let meta = ok_bytes(pbsfs(&["cat", s(&store), snap, "root.mpxar"]));
    let payload = ok_bytes(pbsfs(&["cat", s(&store), snap, "root.ppxar"]));
    std::fs::write(tmp.0.join("root.mpxar"), &meta).unwrap();
    let (_, ar) = open(&tmp.0, "root.mpxar");
    assert_eq!(ar.prelude(), None, "no exclude patterns, no PRELUDE");
    let mut refs = decode_completely(&tmp.0, "root.mpxar", true);
    refs.sort();
    assert_eq!(refs.len(), 100);
    assert_eq!(refs[0].0, 16, "right after the payload start marker");
    for w in refs.windows(2) {
        assert_eq!(w[0].0 + 16 + w[0].1, w[1].0, "payloads back to back: {w:?}");
    }
    let (off, size) = refs[99];
    assert_eq!(
        off + 16 + size + 16,
        payload.len() as u64,
        "the tail marker closes the stream"
    );
    for (off, size) in &refs {
        let h = format::Header::parse(
            payload[*off as usize..*off as usize + 16]
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            (h.htype, h.full_size),
            (format::PAYLOAD, size + 16),
            "at {off}"
        );
    }

    // The same tree in metadata mode: unchanged, every file is referenced from the
    // payload chunks above and the metadata stream is the same, byte for byte; after one
    // file changed, the archive (now with unreferenced padding) passes the same test.
    let metadata_run = |time: &str| {
        pbsfs_ok(&[
            "backup",
            s(&store),
            "host/own",
            &arg,
            "--backup-time",
            time,
            "--change-detection-mode",
            "metadata",
        ])
    };
    let out = metadata_run("2024-05-02T09:11:33Z");
    assert!(out.contains("files: 0 re-read"), "{out}");
    let snap2 = "host/own/2024-05-02T09:11:33Z";
    assert_eq!(
        ok_bytes(pbsfs(&["cat", s(&store), snap2, "root.mpxar"])),
        meta
    );
    let changed = src.join("folder_3/file_5");
    std::fs::write(&changed, vec![7u8; MIB as usize]).unwrap();
    std::os::unix::fs::chown(&changed, Some(1000), Some(1000)).unwrap();
    // (With 16 MiB chunks of zeros around it, one changed MiB costs more padding than
    // the 10% rule allows for its neighbours: some are read again, the rest referenced.)
    let out = metadata_run("2024-05-02T10:11:33Z");
    assert!(!out.contains(" 0 referenced"), "{out}");
    let snap3 = "host/own/2024-05-02T10:11:33Z";
    let meta = ok_bytes(pbsfs(&["cat", s(&store), snap3, "root.mpxar"]));
    let payload = ok_bytes(pbsfs(&["cat", s(&store), snap3, "root.ppxar"]));
    std::fs::write(tmp.0.join("root3.mpxar"), &meta).unwrap();
    let refs = decode_completely(&tmp.0, "root3.mpxar", true);
    assert_eq!(refs.len(), 100);
    for w in refs.windows(2) {
        assert!(w[0].0 + 16 + w[0].1 <= w[1].0, "forward references: {w:?}");
    }
    for (off, size) in &refs {
        let at = *off as usize;
        let h = format::Header::parse(payload[at..at + 16].try_into().unwrap());
        assert_eq!((h.htype, h.full_size), (format::PAYLOAD, size + 16));
    }
    let tail = format::Header::parse(payload[payload.len() - 16..].try_into().unwrap());
    assert_eq!(tail.htype, format::PAYLOAD_TAIL_MARKER);
    let used: u64 = refs.iter().map(|(_, size)| 16 + size).sum::<u64>() + 32;
    assert!(used < payload.len() as u64, "the stream holds padding");
}
