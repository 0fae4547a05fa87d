//! Bad input (issue 12), the chunk and index cases, through the runner of `bad_input`:
//! every kind of damage to a chunk (truncated, empty, flipped, wrong magic, bad CRC,
//! broken or truncated zstd frames, a bomb, other content, encrypted, FIFO, device,
//! sparse giant, symlink) and to an index (truncated, oversized, wrong magic, absurd
//! size or chunk size, decreasing or huge didx offsets, FIFO, sparse giant).

use std::path::{Path, PathBuf};

use pbsfs::store::format::blob;
use pbsfs::Digest;

use crate::bad_input::*;
use crate::common::*;

fn fidx_path(store: &Path) -> PathBuf {
    snap_file(store, SNAP, "drive-scsi0.img.fidx")
}

fn didx_path(store: &Path) -> PathBuf {
    snap_file(store, PXAR_SNAP, "root.pxar.didx")
}

fn compressed_magic() -> Vec<u8> {
    blob::encode(&[0u8; 4096], true).unwrap()[..8].to_vec()
}

/// A chunk of the image whose blob is zstd-compressed (`compressed`) or stored raw.
fn image_chunk(store: &Path, compressed: bool) -> (Digest, PathBuf) {
    let ds = pbsfs::Datastore::open(store, None).unwrap();
    let idx = ds.read_index(&fidx_path(store)).unwrap();
    let magic = compressed_magic();
    (0..idx.chunk_count())
        .map(|i| idx.chunk_info(i).unwrap().digest)
        .map(|d| (d, ds.chunk_store().chunk_path(&d)))
        .find(|(_, p)| (std::fs::read(p).unwrap()[..8] == magic[..]) == compressed)
        .expect("such a chunk")
}

/// Damage a chunk's file with `f`; the digest is what errors must name.
fn chunk_case(
    compressed: bool,
    f: impl Fn(&Path, Vec<u8>) + 'static,
) -> Box<dyn Fn(&Path) -> String> {
    Box::new(move |store| {
        let (d, p) = image_chunk(store, compressed);
        let raw = std::fs::read(&p).unwrap();
        f(&p, raw);
        d.to_hex()
    })
}

/// A valid blob header (`magic`, CRC recomputed) around `payload`.
fn with_crc(magic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Replace the image's index by one of `size` bytes in chunks of `chunk_size` over its
/// first `n` digests, consistent in itself and with the manifest.
fn rewrite_fidx(store: &Path, size: u64, chunk_size: u64, n: usize) {
    use pbsfs::store::format::index::fixed::FixedIndex;
    let p = fidx_path(store);
    let mut idx = FixedIndex::parse(&std::fs::read(&p).unwrap()).unwrap();
    idx.digests.truncate(n);
    let all: Vec<u8> = idx
        .digests
        .iter()
        .flat_map(|d| d.as_bytes().to_vec())
        .collect();
    idx.csum = Digest::of(&all);
    idx.size = size;
    idx.chunk_size = chunk_size;
    std::fs::write(&p, idx.to_bytes()).unwrap();
    set_manifest_entry(store, SNAP, "drive-scsi0.img.fidx", size, idx.csum);
}

/// Replace the pxar archive's index by one with end offsets `ends` over its digests
/// (reused in turn), consistent in itself and with the manifest.
fn rewrite_didx(store: &Path, ends: impl Fn(&[u64]) -> Vec<u64>) {
    use pbsfs::store::format::index::dynamic::DynamicIndex;
    let p = didx_path(store);
    let mut idx = DynamicIndex::parse(&std::fs::read(&p).unwrap()).unwrap();
    let old: Vec<u64> = idx.entries.iter().map(|e| e.0).collect();
    let digests: Vec<Digest> = idx.entries.iter().map(|e| e.1).collect();
    idx.entries = ends(&old)
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e, digests[i % digests.len()]))
        .collect();
    let body: Vec<u8> = idx
        .entries
        .iter()
        .flat_map(|(e, d)| [e.to_le_bytes().to_vec(), d.as_bytes().to_vec()].concat())
        .collect();
    idx.csum = Digest::of(&body);
    let size = idx.entries.last().unwrap().0;
    std::fs::write(&p, idx.to_bytes()).unwrap();
    set_manifest_entry(store, PXAR_SNAP, "root.pxar.didx", size, idx.csum);
}

fn damage_file(
    path: fn(&Path) -> PathBuf,
    named: &'static str,
    f: impl Fn(&Path, Vec<u8>) + 'static,
) -> Box<dyn Fn(&Path) -> String> {
    Box::new(move |store| {
        let p = path(store);
        let raw = std::fs::read(&p).unwrap();
        f(&p, raw);
        named.to_string()
    })
}

// ---- what each kind of target must give ----

fn image_cli() -> Vec<(Vec<&'static str>, i32)> {
    vec![
        (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 2),
        (vec!["restore", "{S}", SNAP, "drive-scsi0.img", "{T}"], 2),
        (vec!["snapshots", "{S}"], 0),
        (vec!["cat", "{S}", SNAP, "qemu-server.conf"], 0),
    ]
}

fn image_mount(good: &Good, errno: i32) -> Vec<(Op, String, Want)> {
    let img = format!("{SNAP}/drive-scsi0.img");
    vec![
        (
            Op::List,
            SNAP.into(),
            Want::Names(vec!["drive-scsi0.img".into(), "notes".into()]),
        ),
        (Op::Stat, img.clone(), Want::Ok),
        (Op::Read, img, Want::Errno(errno)),
        (
            Op::Read,
            format!("{SNAP}/qemu-server.conf"),
            Want::Bytes(good.conf.clone()),
        ),
    ]
}

fn pxar_cli() -> Vec<(Vec<&'static str>, i32)> {
    vec![
        (vec!["cat", "{S}", PXAR_SNAP, "root.pxar/a.txt"], 2),
        (vec!["restore", "{S}", PXAR_SNAP, "root.pxar", "{T}"], 2),
        (vec!["snapshots", "{S}"], 0),
    ]
}

fn pxar_mount() -> Vec<(Op, String, Want)> {
    vec![
        (
            Op::List,
            PXAR_SNAP.into(),
            Want::Names(vec!["root.pxar".into()]),
        ),
        (
            Op::List,
            format!("{PXAR_SNAP}/root.pxar"),
            Want::Errno(libc::EIO),
        ),
        (
            Op::Read,
            format!("{PXAR_SNAP}/root.pxar/a.txt"),
            Want::Errno(libc::EIO),
        ),
        (
            Op::Read,
            format!("{SNAP}/drive-scsi0.img"),
            Want::Bytes(image_bytes()),
        ),
    ]
}

/// An encrypted chunk: magic, CRC over the ciphertext, iv, tag, ciphertext (4 KiB).
fn encrypted_blob() -> Vec<u8> {
    let cipher = pseudo_random(4096, 79);
    let mut raw = blob::ENCRYPTED_BLOB_MAGIC_1_0.to_vec();
    raw.extend_from_slice(&crc32fast::hash(&cipher).to_le_bytes());
    raw.extend_from_slice(&[7u8; 32]);
    raw.extend_from_slice(&cipher);
    raw
}

fn chunk(
    name: &'static str,
    good: &Good,
    errno: i32,
    damage: Box<dyn Fn(&Path) -> String>,
) -> Case {
    Case {
        name,
        damage,
        cli: image_cli(),
        mount: image_mount(good, errno),
        verify: Some((SNAP, 1)),
    }
}

#[test]
fn chunk_damage_is_named_refused_and_changes_nothing() {
    let good = good_store("bad-chunk");
    let eio = libc::EIO;
    let cases = vec![
        chunk(
            "truncated chunk",
            &good,
            eio,
            chunk_case(false, |p, r| std::fs::write(p, &r[..r.len() / 2]).unwrap()),
        ),
        chunk(
            "empty chunk",
            &good,
            eio,
            chunk_case(false, |p, _| std::fs::write(p, b"").unwrap()),
        ),
        chunk(
            "a flipped bit",
            &good,
            eio,
            chunk_case(false, |p, mut r| {
                r[100] ^= 0x08;
                std::fs::write(p, r).unwrap()
            }),
        ),
        chunk(
            "wrong magic",
            &good,
            eio,
            chunk_case(false, |p, mut r| {
                r[0] ^= 0xff;
                std::fs::write(p, r).unwrap()
            }),
        ),
        chunk(
            "bad CRC",
            &good,
            eio,
            chunk_case(true, |p, mut r| {
                r[9] ^= 0x01;
                std::fs::write(p, r).unwrap()
            }),
        ),
        chunk(
            "corrupt zstd frame",
            &good,
            eio,
            chunk_case(true, |p, r| {
                let mut payload = r[12..].to_vec();
                payload[0] ^= 0xff; // the frame magic
                std::fs::write(p, with_crc(&r[..8], &payload)).unwrap()
            }),
        ),
        chunk(
            "truncated zstd frame",
            &good,
            eio,
            chunk_case(true, |p, r| {
                let payload = &r[12..r.len() - 8];
                std::fs::write(p, with_crc(&r[..8], payload)).unwrap()
            }),
        ),
        chunk(
            "zstd bomb: 64 MiB behind a 4 KiB index entry",
            &good,
            eio,
            chunk_case(true, |p, _| {
                std::fs::write(p, blob::encode(&vec![0u8; 64 << 20], true).unwrap()).unwrap()
            }),
        ),
        chunk(
            "other content, same length",
            &good,
            eio,
            chunk_case(false, |p, _| {
                std::fs::write(p, blob::encode(&pseudo_random(4096, 77), true).unwrap()).unwrap()
            }),
        ),
        chunk(
            "other content, other length",
            &good,
            eio,
            chunk_case(false, |p, _| {
                std::fs::write(p, blob::encode(&pseudo_random(3000, 78), true).unwrap()).unwrap()
            }),
        ),
        chunk(
            "encrypted chunk, no key",
            &good,
            libc::ENOKEY,
            chunk_case(false, |p, _| std::fs::write(p, encrypted_blob()).unwrap()),
        ),
        // Verify names the plain chunks that disagree with crypt-mode `encrypt`, as
        // `restricted::verify_fails_chunks_whose_crypt_mode_disagrees_...` shows.
        Case {
            verify: None,
            ..chunk(
                "encrypted archive, no key",
                &good,
                libc::ENOKEY,
                Box::new(|store| {
                    let named =
                        chunk_case(false, |p, _| std::fs::write(p, encrypted_blob()).unwrap())(
                            store,
                        );
                    edit_manifest(store, SNAP, |m| {
                        for f in m["files"].as_array_mut().unwrap() {
                            if f["filename"] == "drive-scsi0.img.fidx" {
                                f["crypt-mode"] = "encrypt".into();
                            }
                        }
                    });
                    named
                }),
            )
        },
        chunk(
            "FIFO as a chunk",
            &good,
            eio,
            chunk_case(false, |p, _| replace_with(p, "fifo")),
        ),
        chunk(
            "device node as a chunk",
            &good,
            eio,
            chunk_case(false, |p, _| replace_with(p, "device")),
        ),
        chunk(
            "4 GiB sparse chunk",
            &good,
            eio,
            chunk_case(false, |p, _| replace_with(p, "sparse")),
        ),
        chunk(
            "symlink chunk to a copy outside",
            &good,
            eio,
            chunk_case(false, |p, _| {
                let outside = p.ancestors().nth(4).unwrap().join("outside-chunk");
                std::fs::rename(p, &outside).unwrap();
                std::os::unix::fs::symlink(&outside, p).unwrap();
            }),
        ),
    ];
    run_cases(&good, cases);
}

#[test]
fn index_damage_is_named_refused_and_changes_nothing() {
    let good = good_store("bad-index");
    let fidx = "drive-scsi0.img.fidx";
    let didx = "root.pxar.didx";
    let image = |name, damage| chunk(name, &good, libc::EIO, damage);
    let pxar = |name, damage| Case {
        name,
        damage,
        cli: pxar_cli(),
        mount: pxar_mount(),
        verify: Some((PXAR_SNAP, 1)),
    };
    let cases = vec![
        image(
            "truncated index",
            damage_file(fidx_path, fidx, |p, r| {
                std::fs::write(p, &r[..r.len() - 10]).unwrap()
            }),
        ),
        image(
            "oversized index",
            damage_file(fidx_path, fidx, |p, mut r| {
                r.extend_from_slice(&[0u8; 32]);
                std::fs::write(p, r).unwrap()
            }),
        ),
        image(
            "wrong index magic",
            damage_file(fidx_path, fidx, |p, mut r| {
                r[3] ^= 0x10;
                std::fs::write(p, r).unwrap()
            }),
        ),
        image(
            "index header claiming 2^62 bytes",
            damage_file(fidx_path, fidx, |p, mut r| {
                r[64..72].copy_from_slice(&(1u64 << 62).to_le_bytes());
                std::fs::write(p, r).unwrap()
            }),
        ),
        image(
            "index header claiming a chunk size of 3",
            damage_file(fidx_path, fidx, |p, mut r| {
                r[72..80].copy_from_slice(&3u64.to_le_bytes());
                std::fs::write(p, r).unwrap()
            }),
        ),
        image(
            "consistent index with 1 TiB chunks",
            Box::new(move |store| {
                rewrite_fidx(store, 2 << 40, 1 << 40, 2);
                fidx.to_string()
            }),
        ),
        image(
            "FIFO as an index",
            damage_file(fidx_path, fidx, |p, _| replace_with(p, "fifo")),
        ),
        image(
            "device node as an index",
            damage_file(fidx_path, fidx, |p, _| replace_with(p, "device")),
        ),
        image(
            "4 GiB sparse index",
            damage_file(fidx_path, fidx, |p, _| replace_with(p, "sparse")),
        ),
        pxar(
            "didx with decreasing end offsets",
            Box::new(move |store| {
                rewrite_didx(store, |old| {
                    let mut e = old.to_vec();
                    e.push(old[old.len() - 1] + 10);
                    e.push(old[old.len() - 1] + 5);
                    e
                });
                didx.to_string()
            }),
        ),
        pxar(
            "didx with huge end offsets",
            Box::new(move |store| {
                rewrite_didx(store, |old| {
                    let mut e = old.to_vec();
                    e.push(1 << 62);
                    e
                });
                didx.to_string()
            }),
        ),
        pxar(
            "truncated didx",
            damage_file(didx_path, didx, |p, r| {
                std::fs::write(p, &r[..r.len() - 7]).unwrap()
            }),
        ),
        pxar(
            "4 GiB sparse didx",
            damage_file(didx_path, didx, |p, _| replace_with(p, "sparse")),
        ),
    ];
    run_cases(&good, cases);
}

/// A planted 4 GiB sparse chunk is refused by its size, never read: the CLI's peak
/// resident size stays far below it (reading it would need 4 GiB); the mount's reads are
/// bounded by the runner (`rchar`).
#[test]
fn a_4_gib_sparse_chunk_is_refused_unread() {
    let good = good_store("bad-sparse");
    let (digest, path) = image_chunk(&good.store, false);
    replace_with(&path, "sparse");
    let st = s(&good.store);
    for (args, code) in [
        (vec!["cat", st, SNAP, "drive-scsi0.img"], 2),
        (vec!["verify", st, SNAP, "--keep-bad"], 1),
    ] {
        let (kib, out) = peak_rss_kib(&args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains(&digest.to_hex()) || stdout(&out).contains(&digest.to_hex()),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(kib < 64 * 1024, "{args:?} peaked at {kib} KiB");
    }
}
