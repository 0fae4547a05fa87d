//! Stores for the scale benchmarks of scripts/bench.sh (issue 11's "memory stays flat"
//! and listing figures), written with the library's own primitives in seconds instead
//! of thousands of CLI runs:
//!   bench_store listing STORE N          N groups x N snapshots, each a manifest and a
//!                                        config blob (the 100 x 100 listing store)
//!   bench_store sparse STORE GIB EVERY   one snapshot with a GIB GiB image of 4 MiB
//!                                        chunks, every EVERY-th pseudo-random and the rest
//!                                        zeros; prints the image's SHA-256
//! STORE must not exist or be empty.

use std::path::PathBuf;

use pbsfs::store::files::write_index_file;
use pbsfs::store::format::blob;
use pbsfs::store::format::index::fixed::FixedIndex;
use pbsfs::store::format::manifest::{CryptMode, FileEntry, Manifest};
use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use pbsfs::{Datastore, Digest};
use sha2::{Digest as _, Sha256};

const T0: i64 = 1_714_637_493; // 2024-05-02T08:11:33Z
const CHUNK: usize = 4 << 20;

fn usage() -> ! {
    eprintln!("usage: bench_store listing STORE N | sparse STORE GIB EVERY");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(v: Option<String>) -> T {
    v.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

/// A finished snapshot of `group` at `time` holding `files` (name, bytes already
/// written) and a `qemu-server.conf` blob.
fn snapshot(ds: &Datastore, id: &str, time: i64, index: Option<(FixedIndex, u64)>) {
    let g = BackupGroup::new(BackupNamespace::root(), BackupType::Vm, id).unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let d = BackupDir::new(g, time).unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    let dir = ds.snapshot_path(&d);
    let mut m = Manifest::new(&d);
    if let Some((idx, size)) = index {
        let file = "drive-scsi0.img.fidx".to_string();
        write_index_file(&dir.join(&file), &idx.to_bytes(), ds.owner()).unwrap();
        m.add_file(&FileEntry {
            filename: file,
            crypt_mode: CryptMode::None,
            size,
            csum: idx.csum,
        });
    }
    let conf = blob::encode(b"memory: 2048\ncores: 2\n", true).unwrap();
    std::fs::write(dir.join("qemu-server.conf.blob"), &conf).unwrap();
    m.add_file(&FileEntry {
        filename: "qemu-server.conf.blob".into(),
        crypt_mode: CryptMode::None,
        size: conf.len() as u64,
        csum: Digest::of(&conf),
    });
    ds.create_manifest(&d, &m, &lock).unwrap();
}

/// Deterministic bytes (xorshift), so every run builds the same store.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| usage());
    let store = PathBuf::from(args.next().unwrap_or_else(|| usage()));
    let ds = Datastore::create(&store, false).unwrap();
    match what.as_str() {
        "listing" => {
            let n: usize = arg(args.next());
            for g in 0..n {
                for s in 0..n {
                    snapshot(&ds, &format!("{}", 100 + g), T0 + s as i64 * 3600, None);
                }
            }
        }
        "sparse" => {
            let gib: u64 = arg(args.next());
            let every: u64 = arg(args.next());
            let chunks = gib * 1024 / 4;
            let mut sha = Sha256::new();
            let zero = vec![0u8; CHUNK];
            let zero_digest = ds.chunk_store().insert_plain(&zero).unwrap().0;
            let mut data = vec![0u8; CHUNK];
            let mut digests = Vec::with_capacity(chunks as usize);
            for i in 0..chunks {
                if i % every == every - 1 {
                    fill(&mut data, i + 1);
                    digests.push(ds.chunk_store().insert_plain(&data).unwrap().0);
                    sha.update(&data);
                } else {
                    digests.push(zero_digest);
                    sha.update(&zero);
                }
            }
            let size = chunks * CHUNK as u64;
            let idx = FixedIndex::new(size, CHUNK as u64, digests, T0).unwrap();
            snapshot(&ds, "100", T0, Some((idx, size)));
            println!("{}", hex(&sha.finalize()));
        }
        _ => usage(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
