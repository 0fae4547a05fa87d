//! The physical rate `pbsfs verify` is compared with (scripts/bench.sh): every chunk
//! file under `STORE/.chunks` read, CRC-32 checked, zstd-decoded and SHA-256 hashed
//! on N threads, with the zstd, crc32fast and sha2 crates directly and none of pbsfs's
//! code. Prints bytes decoded, seconds and GiB/s.
//!   cargo run --release --example chunk_rate -- STORE [THREADS]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

const COMPRESSED: [u8; 8] = [49, 185, 88, 66, 111, 182, 163, 127];
const UNCOMPRESSED: [u8; 8] = [66, 171, 56, 7, 190, 131, 112, 161];

fn main() {
    let mut args = std::env::args().skip(1);
    let store = PathBuf::from(args.next().expect("usage: chunk_rate STORE [THREADS]"));
    let threads: usize = args.next().map_or(2, |t| t.parse().expect("THREADS"));
    let mut files = Vec::new();
    for prefix in std::fs::read_dir(store.join(".chunks")).expect("STORE/.chunks") {
        let prefix = prefix.unwrap().path();
        if let Ok(list) = std::fs::read_dir(&prefix) {
            for f in list {
                let p = f.unwrap().path();
                if p.extension().is_none() {
                    files.push(p);
                }
            }
        }
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut bytes = 0u64;
                    let mut out = Vec::with_capacity(16 << 20);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = files.get(i) else { break };
                        let raw = std::fs::read(p).unwrap();
                        let crc = u32::from_le_bytes(raw[8..12].try_into().unwrap());
                        assert_eq!(crc32fast::hash(&raw[12..]), crc, "{}", p.display());
                        let data: &[u8] = if raw[..8] == COMPRESSED {
                            out.clear();
                            zstd::stream::copy_decode(&raw[12..], &mut out).unwrap();
                            &out
                        } else {
                            assert_eq!(raw[..8], UNCOMPRESSED, "{}", p.display());
                            &raw[12..]
                        };
                        let digest = Sha256::digest(data);
                        let name = p.file_name().unwrap().to_str().unwrap();
                        assert_eq!(name, hex(&digest), "{}", p.display());
                        bytes += data.len() as u64;
                    }
                    bytes
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} chunks, {total} bytes decoded in {secs:.3} s on {threads} threads: {:.3} GiB/s",
        files.len(),
        total as f64 / secs / (1u64 << 30) as f64
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
