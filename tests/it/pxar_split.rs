//! Split pxar archives written by `pbsfs backup --change-detection-mode data`: the
//! snapshot holds `root.mpxar.didx` + `root.ppxar.didx` and no catalog; the metadata
//! stream is v2 (FORMAT_VERSION 2, a PRELUDE only with exclude patterns, as JSON), the
//! payload stream is framed by its start and tail markers and every file's PAYLOAD_REF
//! points at its PAYLOAD header in it; the pair decodes completely and reads back
//! through restore, the mount, `catalog`, `find` and `verify`, by the name the user
//! gave (`root.pxar`). `legacy` stays the default; `metadata` without an earlier split
//! archive writes everything, as `data` (reuse: `pxar_metadata`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use pbsfs::pxar::decoder::{Archive, Entry, EntryKind};
use pbsfs::pxar::format::{
    Header, FORMAT_VERSION, GOODBYE, PAYLOAD, PAYLOAD_START_MARKER, PAYLOAD_TAIL_MARKER, PRELUDE,
};

use crate::common::*;
use crate::mount_util::Mounted;
use crate::pxar_backup::{build_tree, source_tree};
use crate::pxar_mount::{assert_same, snapshot};

const TIME: &str = "2024-05-02T08:11:33Z";
const SNAP: &str = "host/tree/2024-05-02T08:11:33Z";

fn header_at(raw: &[u8], at: usize) -> Header {
    Header::parse(raw[at..at + 16].try_into().unwrap())
}

fn u64_at(raw: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(raw[at as usize..at as usize + 8].try_into().unwrap())
}

/// 30 folders of 10 files (0-3 KiB, some empty), next to `build_tree`'s entries.
fn add_files(root: &Path) {
    for d in 0..30 {
        let dir = root.join(format!("many/d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            let len = (d * 37 + f * 311) % 3001;
            let data = pseudo_random(len, (d * 10 + f) as u64 + 7);
            std::fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
}

fn backup(store: &Path, src: &Path, time: &str, extra: &[&str]) -> std::process::Output {
    let arg = format!("root.pxar:{}", s(src));
    let mut args = vec![
        "backup",
        s(store),
        "host/tree",
        &arg,
        "--backup-time",
        time,
        "--chunk-size",
        "64K",
    ];
    args.extend_from_slice(extra);
    pbsfs(&args)
}

fn cat(store: &Path, snap: &str, archive: &str) -> Vec<u8> {
    ok_bytes(pbsfs(&["cat", s(store), snap, archive]))
}

/// The file names in a snapshot folder, sorted.
fn snapshot_files(store: &Path, snap: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.join(snap))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Walk every entry of the archive: (path, entry), the root as "".
fn walk(ar: &Archive<Vec<u8>>) -> Vec<(Vec<u8>, Entry)> {
    let root = ar.root().unwrap();
    let mut out = vec![(Vec::new(), root.clone())];
    let mut todo = vec![(Vec::new(), root)];
    while let Some((path, dir)) = todo.pop() {
        let children = ar.list(&dir).unwrap();
        assert!(
            children.windows(2).all(|w| w[0].name < w[1].name),
            "names sorted"
        );
        for c in children {
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&c.name);
            assert_eq!(
                ar.lookup_path(&p).unwrap().map(|e| e.offset),
                Some(c.offset)
            );
            if c.is_dir() {
                todo.push((p.clone(), c.clone()));
            }
            out.push((p, c));
        }
    }
    out
}

#[test]
fn a_data_mode_backup_is_a_split_pair_that_reads_back_everywhere() {
    let tmp = TempDir::new("pxar-split");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    add_files(&src);
    let report = ok(&backup(
        &store,
        &src,
        TIME,
        &["--change-detection-mode", "data"],
    ));
    assert!(report.contains(SNAP), "{report}");
    assert_eq!(
        snapshot_files(&store, SNAP),
        ["index.json.blob", "root.mpxar.didx", "root.ppxar.didx"],
        "the split pair and no catalog"
    );
    // The manifest lists both indexes, no catalog.
    let raw = std::fs::read(store.join(SNAP).join("index.json.blob")).unwrap();
    let manifest = String::from_utf8(pbsfs::store::format::blob::decode(&raw).unwrap()).unwrap();
    assert!(manifest.contains("\"root.mpxar.didx\""), "{manifest}");
    assert!(manifest.contains("\"root.ppxar.didx\""), "{manifest}");
    assert!(!manifest.contains("catalog.pcat1"), "{manifest}");

    // The raw streams: v2 without a PRELUDE; payload markers at both ends.
    let meta = cat(&store, SNAP, "root.mpxar");
    let payload = cat(&store, SNAP, "root.ppxar");
    let h = header_at(&meta, 0);
    assert_eq!((h.htype, h.full_size), (FORMAT_VERSION, 24));
    assert_eq!(u64_at(&meta, 16), 2);
    assert_ne!(
        header_at(&meta, 24).htype,
        PRELUDE,
        "no patterns, no PRELUDE"
    );
    let h = header_at(&payload, 0);
    assert_eq!((h.htype, h.full_size), (PAYLOAD_START_MARKER, 16));
    let h = header_at(&payload, payload.len() - 16);
    assert_eq!((h.htype, h.full_size), (PAYLOAD_TAIL_MARKER, 16));
    let files = snapshots_json(&store)[0]["files"].clone();
    let size_of = |name: &str| {
        let f = files
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["filename"] == name);
        f.unwrap_or_else(|| panic!("{name} in {files}"))["size"].as_u64()
    };
    assert_eq!(size_of("root.mpxar.didx"), Some(meta.len() as u64));
    assert_eq!(size_of("root.ppxar.didx"), Some(payload.len() as u64));

    // The decoder reads every entry; every file's reference is the PAYLOAD header of
    // its content in the payload stream, the first right after the start marker.
    let ar = Archive::open(meta.clone(), Some(payload.clone()), "root.mpxar").unwrap();
    assert_eq!(ar.version(), 2);
    assert_eq!(ar.prelude(), None);
    let root = ar.root().unwrap();
    let gb = root.dir().unwrap().goodbye_offset();
    assert_eq!(u64_at(&meta, gb), GOODBYE);
    let gb_size = u64_at(&meta, gb + 8);
    let tail_at = gb + gb_size - 24;
    assert_eq!(
        u64_at(&meta, tail_at + 8),
        gb,
        "the root tail reaches back to the stream start, before FORMAT_VERSION"
    );
    let entries = walk(&ar);
    let source = source_tree(&src);
    assert_eq!(entries.len(), source.len(), "every entry");
    assert!(entries.len() > 300, "{} entries", entries.len());
    let mut refs = Vec::new();
    for (path, e) in &entries {
        let EntryKind::File { size, payload: p } = &e.kind else {
            continue;
        };
        assert!(p.is_ref(), "{path:?}: a PAYLOAD_REF");
        let at = p.offset() as usize;
        let h = header_at(&payload, at);
        assert_eq!((h.htype, h.full_size), (PAYLOAD, 16 + size), "{path:?}");
        let want = std::fs::read(src.join(OsStr::from_bytes(path))).unwrap();
        assert_eq!(
            &payload[at + 16..at + 16 + *size as usize],
            &want[..],
            "{path:?}"
        );
        let mut got = vec![0u8; *size as usize];
        let mut done = 0;
        while done < got.len() {
            let n = ar.read(e, done as u64, &mut got[done..]).unwrap();
            assert!(n > 0);
            done += n;
        }
        assert_eq!(got, want, "{path:?} through the decoder");
        refs.push((p.offset(), *size));
    }
    refs.sort();
    assert_eq!(refs[0].0, 16, "right after the payload start marker");
    for w in refs.windows(2) {
        assert_eq!(w[0].0 + 16 + w[0].1, w[1].0, "payloads back to back: {w:?}");
    }
    let last = refs.last().unwrap();
    assert_eq!(
        last.0 + 16 + last.1 + 16,
        payload.len() as u64,
        "then the tail"
    );

    // Restore by the name given at backup: the same tree, hardlinks included.
    let out = tmp.join("restored");
    ok(&pbsfs(&["restore", s(&store), SNAP, "root.pxar", s(&out)]));
    assert_same("restore", &snapshot(&src, true), &snapshot(&out, true));
    let small = ok_bytes(pbsfs(&["cat", s(&store), SNAP, "root.pxar/a/b/c/small"]));
    assert_eq!(small, b"small file\n");

    // The mount.
    let mp = tmp.join("mnt");
    let m = Mounted::start(&store, &mp, &[]);
    let mounted = m.path(&format!("{SNAP}/root.pxar"));
    assert_same("mount", &snapshot(&src, false), &snapshot(&mounted, false));
    m.unmount();

    // catalog and find read the metadata stream: every entry, the deep file found.
    let listing = ok(&pbsfs(&["catalog", s(&store), SNAP, "root.pxar"]));
    assert_eq!(listing.lines().count(), source.len(), "{listing}");
    assert!(listing.contains("/a/b/c/small\""), "{listing}");
    let found = ok(&pbsfs(&["find", s(&store), "host/tree", "**/c/small"]));
    assert!(
        found.contains(SNAP) && found.contains("/a/b/c/small"),
        "{found}"
    );
    exits(&pbsfs(&["find", s(&store), "host/tree", "no-such-name"]), 1);

    // verify checks both indexes.
    let v = ok(&pbsfs(&["verify", s(&store)]));
    assert!(v.contains("1 ok, 0 failed"), "{v}");
}

#[test]
fn exclude_patterns_go_into_a_json_prelude_not_a_cli_file() {
    let tmp = TempDir::new("pxar-split-prelude");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("keep"), b"kept").unwrap();
    std::fs::write(src.join("x.tmp"), b"left out").unwrap();
    std::fs::write(src.join("d/y.tmp"), b"left out").unwrap();
    let extra = [
        "--change-detection-mode",
        "data",
        "--exclude",
        "*.tmp",
        "--exclude",
        "/d/",
    ];
    ok(&backup(&store, &src, TIME, &extra));
    let meta = cat(&store, SNAP, "root.mpxar");
    let payload = cat(&store, SNAP, "root.ppxar");
    let h = header_at(&meta, 24);
    assert_eq!(h.htype, PRELUDE, "right after FORMAT_VERSION");
    let ar = Archive::open(meta.clone(), Some(payload), "root.mpxar").unwrap();
    let prelude: serde_json::Value = serde_json::from_slice(ar.prelude().unwrap()).unwrap();
    assert_eq!(
        prelude,
        serde_json::json!({ "exclude-patterns": "*.tmp\n/d/\n" })
    );
    assert_eq!(ar.root().unwrap().offset, 24 + h.full_size);
    let names: Vec<Vec<u8>> = walk(&ar).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        vec![b"".to_vec(), b"keep".to_vec()],
        "no .pxarexclude-cli"
    );

    // The legacy layout of the same backup keeps the `.pxarexclude-cli` file, no PRELUDE.
    let t2 = "2024-05-02T09:00:00Z";
    ok(&backup(&store, &src, t2, &extra[2..]));
    let legacy = cat(&store, &format!("host/tree/{t2}"), "root.pxar");
    let ar = Archive::open(legacy, None, "root.pxar").unwrap();
    assert_eq!((ar.version(), ar.prelude()), (1, None));
    let cli = ar.lookup_path(b".pxarexclude-cli").unwrap().unwrap();
    let mut buf = vec![0u8; 64];
    let n = ar.read(&cli, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"*.tmp\n/d/\n");
}

#[test]
fn legacy_stays_the_default_and_metadata_mode_without_a_split_base_writes_all() {
    let tmp = TempDir::new("pxar-split-modes");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    add_files(&src);
    ok(&backup(&store, &src, TIME, &[]));
    assert_eq!(
        snapshot_files(&store, SNAP),
        ["catalog.pcat1.didx", "index.json.blob", "root.pxar.didx"]
    );
    let t2 = "2024-05-02T09:00:00Z";
    ok(&backup(
        &store,
        &src,
        t2,
        &["--change-detection-mode", "legacy"],
    ));
    let snap2 = format!("host/tree/{t2}");
    let default_stream = cat(&store, SNAP, "root.pxar");
    assert_eq!(
        default_stream,
        cat(&store, &snap2, "root.pxar"),
        "explicit legacy is the default, byte for byte"
    );
    assert_ne!(header_at(&default_stream, 0).htype, FORMAT_VERSION, "v1");

    // metadata with no earlier split archive in the group (only legacy ones): there is
    // no previous snapshot, so it behaves as data: the split pair, every file read.
    let t3 = "2024-05-02T10:00:00Z";
    let out = backup(&store, &src, t3, &["--change-detection-mode", "metadata"]);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 referenced from the previous snapshot"),
        "{stdout}"
    );
    assert!(!stdout.contains("files: 0 re-read"), "{stdout}");
    assert_eq!(
        snapshot_files(&store, &format!("host/tree/{t3}")),
        ["index.json.blob", "root.mpxar.didx", "root.ppxar.didx"]
    );
    // An unknown mode is a usage error naming the value.
    let err = fails(&backup(
        &store,
        &src,
        "2024-05-02T10:00:00Z",
        &["--change-detection-mode", "fast"],
    ));
    assert!(err.contains("fast"), "{err}");
}
