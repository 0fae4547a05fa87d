//! The seed corpora of `scripts/fuzz.sh`: small valid objects of every fuzzed format,
//! written by the library's own encoders (an ignored test, run by the script with
//! `PBSFS_FUZZ_SEEDS=<dir>`), one folder per fuzz target, plus the real PBS files of
//! `../shared/fixtures/pbs-upstream` when present (copied into the seed folder, never
//! committed). Valid seeds let the fuzzer start deep inside each decoder instead of at
//! its magic.

use std::path::Path;

use pbsfs::pxar::catalog::{CatalogAttr, CatalogWriter};
use pbsfs::pxar::encoder::{Acl, AclDefault, AclGroup, AclUser, Encoder, Metadata, Xattr};
use pbsfs::pxar::format::Stat;
use pbsfs::store::format::blob;
use pbsfs::store::format::index::dynamic::DynamicIndex;
use pbsfs::store::format::index::fixed::FixedIndex;
use pbsfs::store::format::manifest::{CryptMode, FileEntry, Manifest, VerifyState};
use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use pbsfs::util::upid::Upid;
use pbsfs::Digest;

use super::fuzz_regressions::entries::join_split;

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

fn meta(mode: u64) -> Metadata {
    Metadata {
        stat: Stat {
            mode,
            flags: 0,
            uid: 1000,
            gid: 100,
            mtime_secs: 1_700_000_000,
            mtime_nanos: 5,
        },
        ..Metadata::default()
    }
}

/// A file with every attribute item: xattrs, a full ACL, fcaps, a quota project id.
fn rich(mode: u64) -> Metadata {
    let mut m = meta(mode);
    m.xattrs = vec![Xattr {
        name: b"user.note".to_vec(),
        value: b"v".to_vec(),
    }];
    m.acl = Acl {
        users: vec![AclUser { uid: 7, perms: 6 }],
        groups: vec![AclGroup { gid: 8, perms: 4 }],
        group_obj: Some(5),
        default: Some(AclDefault {
            user_obj: 7,
            group_obj: 5,
            other: 0,
            mask: 7,
        }),
        default_users: vec![AclUser { uid: 9, perms: 4 }],
        default_groups: vec![AclGroup { gid: 10, perms: 0 }],
    };
    m.fcaps = Some(vec![1, 2, 3, 4]);
    m.quota_project_id = Some(42);
    m
}

/// One tree of every entry kind, into `e` (a single or a split stream).
fn tree<W: std::io::Write, P: std::io::Write>(e: &mut Encoder<W, P>) {
    e.create_directory(b"d", &rich(0o040750)).unwrap();
    let a = e.add_file(b"a", &rich(0o100644), b"hello\n").unwrap();
    e.add_file(b"empty", &meta(0o100600), b"").unwrap();
    e.add_hardlink(b"link", b"d/a", a).unwrap();
    e.finish_directory().unwrap();
    e.add_device(b"dev", &meta(0o020600), 1, 3).unwrap();
    e.add_fifo_or_socket(b"fifo", &meta(0o010644)).unwrap();
    e.add_file(b"file", &meta(0o100644), &[7u8; 300]).unwrap();
    e.add_fifo_or_socket(b"sock", &meta(0o140755)).unwrap();
    e.add_symlink(b"sym", &meta(0o120777), b"d/a").unwrap();
}

fn pxar_seeds(dir: &Path) {
    let e = Encoder::new(Vec::new(), &meta(0o040755)).unwrap();
    let empty = e.finish().unwrap();
    put(dir, "pxar", "empty.pxar", &empty);
    let mut e = Encoder::new(Vec::new(), &meta(0o040755)).unwrap();
    tree(&mut e);
    put(dir, "pxar", "tree.pxar", &e.finish().unwrap());

    let root = meta(0o040755);
    let prelude = br#"{"exclude":["*.tmp"]}"#;
    let mut e = Encoder::new_split(Vec::new(), Vec::new(), &root, Some(prelude)).unwrap();
    tree(&mut e);
    let (m, p) = e.finish_split().unwrap();
    put(dir, "pxar_split", "tree", &join_split(&m, &p));
    let e = Encoder::new_split(Vec::new(), Vec::new(), &root, None).unwrap();
    let (m, p) = e.finish_split().unwrap();
    put(dir, "pxar_split", "empty", &join_split(&m, &p));
}

fn catalog_seed(dir: &Path) {
    let mut w = CatalogWriter::new(Vec::new()).unwrap();
    w.start_directory(b"root.pxar.didx").unwrap();
    w.start_directory(b"etc").unwrap();
    w.add_file(b"hosts", 120, 1_700_000_000).unwrap();
    w.add_file(b"old", 0, -5).unwrap();
    w.end_directory().unwrap();
    for (name, attr) in [
        (&b"l"[..], CatalogAttr::Symlink),
        (b"h", CatalogAttr::Hardlink),
        (b"b", CatalogAttr::BlockDevice),
        (b"c", CatalogAttr::CharDevice),
        (b"p", CatalogAttr::Fifo),
        (b"s", CatalogAttr::Socket),
    ] {
        w.add_entry(name, attr).unwrap();
    }
    w.end_directory().unwrap();
    w.start_directory(b"empty.mpxar.didx").unwrap();
    w.end_directory().unwrap();
    put(dir, "catalog", "catalog.pcat1", &w.finish().unwrap());
}

fn index_seeds(dir: &Path) {
    let d = |i: u8| Digest::of(&[i]);
    let fixed = [
        FixedIndex::new(0, 4096, vec![], 1).unwrap(),
        FixedIndex::new(10_000, 4096, vec![d(1), d(2), d(1)], 1_700_000_000).unwrap(),
    ];
    for (i, f) in fixed.iter().enumerate() {
        put(dir, "fidx", &format!("{i}.fidx"), &f.to_bytes());
    }
    let dynamic = [
        DynamicIndex::new(vec![], 1).unwrap(),
        DynamicIndex::new(vec![(10, d(1)), (4106, d(2)), (4107, d(3))], 2).unwrap(),
    ];
    for (i, x) in dynamic.iter().enumerate() {
        put(dir, "didx", &format!("{i}.didx"), &x.to_bytes());
    }
}

fn manifest_and_blob_seeds(dir: &Path) {
    let ns = BackupNamespace::root();
    let group = BackupGroup::new(ns, BackupType::parse("host").unwrap(), "web-1").unwrap();
    let snap = BackupDir::new(group, 1_700_000_000).unwrap();
    let mut m = Manifest::new(&snap);
    put(
        dir,
        "manifest",
        "new.json",
        &blob::decode(&m.to_blob().unwrap()).unwrap(),
    );
    for (name, size) in [("root.pxar.didx", 300), ("disk.img.fidx", 4096)] {
        m.add_file(&FileEntry {
            filename: name.into(),
            crypt_mode: CryptMode::None,
            size,
            csum: Digest::of(name.as_bytes()),
        });
    }
    let upid = Upid::new("verificationjob", "store:host-web\\x2d1", "root@pam").to_string();
    put(dir, "upid", "verify", upid.as_bytes());
    put(
        dir,
        "upid",
        "real",
        b"UPID:pbs:000004D2:00ABCDEF:00000001:6633CBB5:verify:store\\x3ahost-a:root@pam:",
    );
    let u = m.unprotected_mut();
    u.insert("notes".into(), "first line\nsecond".into());
    let state = VerifyState { ok: true, upid };
    u.insert("verify_state".into(), state.to_value());
    let full = m.to_blob().unwrap();
    put(dir, "manifest", "full.json", &blob::decode(&full).unwrap());
    put(dir, "blob", "manifest.blob", &full);

    let text = b"pbsfs fuzz seed ".repeat(64);
    put(
        dir,
        "blob",
        "plain.blob",
        &blob::encode(b"plain", false).unwrap(),
    );
    put(
        dir,
        "blob",
        "empty.blob",
        &blob::encode(b"", false).unwrap(),
    );
    put(
        dir,
        "blob",
        "zstd.blob",
        &blob::encode(&text, true).unwrap(),
    );
    // More output than the chunk limit the fuzz entry gives `decode_into`: refused.
    let big = vec![0u8; 100_000];
    put(
        dir,
        "blob",
        "refused-oversized.blob",
        &blob::encode(&big, true).unwrap(),
    );
}

/// PBS's own files: its payload index, and its metadata streams paired with an empty
/// payload stream (the payloads are not in the fixtures: reading a file fails, listing
/// works).
fn upstream_seeds(dir: &Path) {
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/pbs-upstream");
    if !up.is_dir() {
        eprintln!("{} absent: no upstream seeds", up.display());
        return;
    }
    let read = |name: &str| std::fs::read(up.join(name)).unwrap();
    let didx = read("backup-client-pxar-data.ppxar.didx");
    put(dir, "didx", "upstream-data.ppxar.didx", &didx);
    for name in ["data", "expected"] {
        let meta = read(&format!("backup-client-pxar-{name}.mpxar"));
        let file = format!("refused-upstream-{name}.mpxar");
        put(dir, "pxar_split", &file, &join_split(&meta, &[]));
    }
}

/// Writes the seeds when `PBSFS_FUZZ_SEEDS` names a folder (`scripts/fuzz.sh` does).
#[test]
#[ignore = "run by scripts/fuzz.sh"]
fn write_seeds() {
    let dir = std::env::var_os("PBSFS_FUZZ_SEEDS").expect("PBSFS_FUZZ_SEEDS=<folder>");
    let dir = Path::new(&dir);
    pxar_seeds(dir);
    catalog_seed(dir);
    index_seeds(dir);
    manifest_and_blob_seeds(dir);
    upstream_seeds(dir);
    // Every seed must be accepted by its own target's entry point (a seed the decoder
    // refuses starts the fuzzer at the magic again), except those named as refused.
    for entry in std::fs::read_dir(dir).unwrap() {
        let sub = entry.unwrap().path();
        let target = sub.file_name().unwrap().to_str().unwrap().to_string();
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            let data = std::fs::read(&f).unwrap();
            let res = super::fuzz_regressions::run(&target, &data);
            let refused = f
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("refused-");
            assert_eq!(res.is_err(), refused, "seed {}: {res:?}", f.display());
        }
    }
}
