//! Deterministic pseudo-random bytes for unit tests (xorshift64: incompressible, the
//! same on every run), so tests need no random-number crate and no fixtures on disk.

/// `len` bytes from a xorshift64 generator seeded with `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
