//! Bad input (issue 12), the pxar cases of issue 9 through the runner of `bad_input`
//! (CLI, mount, no panic, flat memory, store unchanged): a truncated stream, names with
//! `/` and `..`, a header running past its parent, goodbye items pointing outside their
//! directory or back at it (a cycle), hardlinks pointing forward or before the archive,
//! and a payload reference past the payload stream. Each damaged stream is stored
//! consistently (chunk, index, manifest), so only the pxar decoder can refuse it; the
//! decoder's own unit tests (`src/pxar/decoder/tests/bad.rs`) cover every rule offset by
//! offset, these prove the same refusals end to end.

use std::path::Path;

use pbsfs::pxar::encoder::{Encoder, Metadata};
use pbsfs::pxar::format::{self, Stat, S_IFDIR, S_IFREG};
use pbsfs::store::format::index::dynamic::DynamicIndex;
use pbsfs::store::format::manifest::{CryptMode, FileEntry, Manifest};
use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};

use crate::bad_input::*;

const BAD_SNAP: &str = "host/bad/2024-05-02T08:11:33Z";
const BAD_TIME: i64 = 1_714_637_493;

/// Metadata of an entry of mode `mode` (type bits included), mtime fixed.
pub(crate) fn meta(mode: u64) -> Metadata {
    Metadata {
        stat: Stat {
            mode,
            mtime_secs: 1_700_000_000,
            ..Stat::default()
        },
        ..Metadata::default()
    }
}

/// `/a.txt`, `/l` (a hardlink to it), `/sub/b.txt`: one stream, or a metadata and a
/// payload stream.
fn streams(split: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    fn add<W: std::io::Write, P: std::io::Write>(e: &mut Encoder<W, P>) {
        let a = e
            .add_file(b"a.txt", &meta(S_IFREG | 0o644), b"alpha\n")
            .unwrap();
        e.add_hardlink(b"l", b"a.txt", a).unwrap();
        e.create_directory(b"sub", &meta(S_IFDIR | 0o755)).unwrap();
        e.add_file(b"b.txt", &meta(S_IFREG | 0o644), b"beta\n")
            .unwrap();
        e.finish_directory().unwrap();
    }
    let root = meta(S_IFDIR | 0o755);
    if split {
        let mut e = Encoder::new_split(Vec::new(), Vec::new(), &root, None).unwrap();
        add(&mut e);
        let (m, p) = e.finish_split().unwrap();
        (m, Some(p))
    } else {
        let mut e = Encoder::new(Vec::new(), &root).unwrap();
        add(&mut e);
        (e.finish().unwrap(), None)
    }
}

/// Store the streams as `host/bad` at BAD_TIME, written the way a backup writes them.
fn store_streams(store: &Path, (meta, payload): (Vec<u8>, Option<Vec<u8>>)) {
    let ds = pbsfs::Datastore::open(store, None).unwrap();
    let g = BackupGroup::new(BackupNamespace::root(), BackupType::Host, "bad").unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let d = BackupDir::new(g, BAD_TIME).unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    let mut m = Manifest::new(&d);
    let files = match payload {
        None => vec![("root.pxar.didx", meta)],
        Some(p) => vec![("root.mpxar.didx", meta), ("root.ppxar.didx", p)],
    };
    for (name, stream) in files {
        let (digest, _, _) = ds.chunk_store().insert_plain(&stream).unwrap();
        let idx = DynamicIndex::new(vec![(stream.len() as u64, digest)], BAD_TIME).unwrap();
        let path = ds.snapshot_path(&d).join(name);
        pbsfs::store::files::write_index_file(&path, &idx.to_bytes(), ds.owner()).unwrap();
        m.add_file(&FileEntry {
            filename: name.into(),
            crypt_mode: CryptMode::None,
            size: stream.len() as u64,
            csum: idx.csum,
        });
    }
    ds.create_manifest(&d, &m, &lock).unwrap();
    crate::mount_util::release_lock(&ds, &d, lock);
}

fn find(hay: &[u8], what: &[u8]) -> usize {
    hay.windows(what.len())
        .position(|w| w == what)
        .expect("pattern in the stream")
}

fn rfind(hay: &[u8], what: &[u8]) -> usize {
    hay.windows(what.len())
        .rposition(|w| w == what)
        .expect("pattern in the stream")
}

fn put(m: &mut [u8], at: usize, v: u64) {
    m[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(m: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(m[at..at + 8].try_into().unwrap())
}

/// The FILENAME header of `name`.
fn filename_at(m: &[u8], name: &[u8]) -> usize {
    let mut item = format::FILENAME.to_le_bytes().to_vec();
    item.extend_from_slice(&(16 + name.len() as u64 + 1).to_le_bytes());
    item.extend_from_slice(name);
    item.push(0);
    find(m, &item)
}

/// A case: `damage` applied to the metadata stream (single stream unless `split`);
/// `fails` are paths in the snapshot whose reads must fail, `reads` neighbours that
/// must still read back.
fn pxar(
    name: &'static str,
    split: bool,
    damage: fn(&mut Vec<u8>, &[u8]),
    fails: &[&'static str],
    reads: &[(&'static str, &'static [u8])],
) -> Case {
    let archive = if split {
        "root.mpxar.didx"
    } else {
        "root.pxar.didx"
    };
    let mut cli = vec![(vec!["restore", "{S}", BAD_SNAP, "root.pxar", "{T}"], 2)];
    let mut mount = Vec::new();
    for p in fails {
        cli.push((vec!["cat", "{S}", BAD_SNAP, p], 2));
        mount.push((Op::Read, format!("{BAD_SNAP}/{p}"), Want::Errno(libc::EIO)));
    }
    for (p, bytes) in reads {
        cli.push((vec!["cat", "{S}", BAD_SNAP, p], 0));
        mount.push((
            Op::Read,
            format!("{BAD_SNAP}/{p}"),
            Want::Bytes(bytes.to_vec()),
        ));
    }
    mount.push((
        Op::Read,
        format!("{PXAR_SNAP}/root.pxar/sub/b.txt"),
        Want::Bytes(b"beta\n".to_vec()),
    ));
    Case {
        name,
        damage: Box::new(move |store| {
            let (mut m, p) = streams(split);
            damage(&mut m, p.as_deref().unwrap_or(&[]));
            store_streams(store, (m, p));
            archive.to_string()
        }),
        cli,
        mount,
        // Verify checks chunks and indexes, which are sound: it records `ok` and
        // changes nothing else.
        verify: Some((BAD_SNAP, 0)),
    }
}

#[test]
fn pxar_damage_is_named_refused_and_changes_nothing() {
    let good = good_store("bad-pxar");
    let alpha: &[u8] = b"alpha\n";
    let cases = vec![
        pxar(
            "truncated stream",
            false,
            |m, _| m.truncate(m.len() - 40),
            &["root.pxar/a.txt", "root.pxar/sub/b.txt"],
            &[],
        ),
        pxar(
            "a name with a slash",
            false,
            |m, _| {
                let at = filename_at(m, b"b.txt") + 16;
                m[at + 1] = b'/';
            },
            &["root.pxar/sub/b.txt"],
            &[("root.pxar/a.txt", alpha)],
        ),
        pxar(
            "a name that is ..",
            false,
            |m, _| {
                let at = filename_at(m, b"sub") + 16;
                m[at..at + 4].copy_from_slice(b"..\0\0");
            },
            &["root.pxar/sub/b.txt"],
            &[],
        ),
        pxar(
            "a header running past its parent",
            false,
            |m, _| {
                let at = find(m, &format::PAYLOAD.to_le_bytes());
                put(m, at + 8, 1 << 40);
            },
            &["root.pxar/a.txt"],
            &[],
        ),
        pxar(
            "goodbye items pointing before the archive",
            false,
            |m, _| {
                let gb = rfind(m, &format::GOODBYE.to_le_bytes());
                let items = (get(m, gb + 8) as usize - 16) / 24;
                for i in 0..items - 1 {
                    put(m, gb + 16 + 24 * i + 8, gb as u64 + 100);
                }
            },
            &["root.pxar/a.txt", "root.pxar/sub/b.txt"],
            &[],
        ),
        pxar(
            "a cycle: sub's child pointing back at sub",
            false,
            |m, _| {
                let gb = find(m, &format::GOODBYE.to_le_bytes());
                let sub = filename_at(m, b"sub");
                put(m, gb + 16 + 8, (gb - sub) as u64);
            },
            &["root.pxar/sub/b.txt"],
            &[("root.pxar/a.txt", alpha)],
        ),
        pxar(
            "a hardlink pointing forward",
            false,
            |m, _| {
                let at = find(m, &format::HARDLINK.to_le_bytes());
                put(m, at + 16, u64::MAX);
            },
            &["root.pxar/l"],
            &[("root.pxar/a.txt", alpha)],
        ),
        pxar(
            "a hardlink pointing before the archive",
            false,
            |m, _| {
                let at = find(m, &format::HARDLINK.to_le_bytes());
                put(m, at + 16, at as u64 + 1000);
            },
            &["root.pxar/l"],
            &[("root.pxar/a.txt", alpha)],
        ),
        pxar(
            "a payload reference past the payload stream",
            true,
            |m, p| {
                let at = find(m, &format::PAYLOAD_REF.to_le_bytes());
                put(m, at + 16, p.len() as u64);
            },
            &["root.pxar/a.txt"],
            &[("root.pxar/sub/b.txt", b"beta\n")],
        ),
    ];
    run_cases(&good, cases);
}
