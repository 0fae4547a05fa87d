//! The content-defined chunker of dynamic indexes (spec §11.4): a buzhash over a 64-byte
//! window, a cut where `(h & (2*avg-1)) >= 2*avg-3` once the chunk holds at least avg/4
//! bytes, a forced cut at 4*avg (never above 16 MiB, the largest chunk PBS reads), the
//! hash state reset at every cut. Boundaries need not match PBS's: any dynamic index
//! reads the same; what matters is that they depend on content only, so an insertion
//! moves the boundaries near it and no others.
//!
//! The table is pbsfs's own, not casync's: `TABLE[i]` is the high half of the i-th
//! output of splitmix64 seeded with `TABLE_SEED`, computed at compile time.

/// The rolling window: a boundary depends on the last 64 bytes only.
pub const WINDOW: usize = 64;
/// The largest chunk PBS reads (spec §11.4: chunks up to 16 MiB).
pub const MAX_CHUNK: usize = 16 << 20;
/// The seed of the table's generator ("pbsfs_bu" in ASCII).
pub const TABLE_SEED: u64 = 0x7062_7366_735f_6275;

const fn make_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut state = TABLE_SEED;
    let mut i = 0;
    while i < 256 {
        // splitmix64 (Steele, Lea, Flood 2014).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        t[i] = (z >> 32) as u32;
        i += 1;
    }
    t
}

/// One random u32 per byte value.
pub static TABLE: [u32; 256] = make_table();

/// Finds chunk boundaries in a stream fed in pieces of any size.
#[derive(Debug, Clone)]
pub struct Chunker {
    h: u32,
    window: [u8; WINDOW],
    /// Next window slot to write (the oldest byte once the window is full).
    slot: usize,
    /// Bytes hashed since the last cut (the window is full at `WINDOW`).
    filled: usize,
    /// Bytes of the current chunk seen so far.
    len: usize,
    min: usize,
    max: usize,
    mask: u32,
}

impl Chunker {
    /// A chunker for chunks of `avg` bytes on average (a power of two, 64 ..= 16 MiB).
    pub fn new(avg: usize) -> Chunker {
        assert!(
            avg.is_power_of_two() && (WINDOW..=MAX_CHUNK).contains(&avg),
            "chunk size {avg} must be a power of two from 64 to 16M"
        );
        Chunker {
            h: 0,
            window: [0; WINDOW],
            slot: 0,
            filled: 0,
            len: 0,
            min: avg / 4,
            max: (avg * 4).min(MAX_CHUNK),
            mask: (2 * avg - 1) as u32,
        }
    }

    /// The smallest chunk cut by content (only a stream's last chunk is shorter).
    pub fn min_size(&self) -> usize {
        self.min
    }

    /// The largest chunk: a cut is forced here.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Feed the next bytes of the stream. `Some(n)`: the current chunk ends after
    /// `data[..n]` (the state is reset; feed `data[n..]` next). `None`: no boundary in
    /// `data`, all of it belongs to the current chunk.
    pub fn scan(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        // Bytes more than a window before `min` cannot influence any boundary (the hash
        // covers the window only, and no cut comes before `min`): skip them unhashed.
        let hash_from = self.min.saturating_sub(WINDOW);
        if self.len < hash_from {
            let skip = (hash_from - self.len).min(data.len());
            self.len += skip;
            i = skip;
        }
        // Hashing starts here in this call; earlier bytes of the window are in `window`.
        let first = i;
        // Fill: the first 64 bytes of a chunk's hash enter without leaving.
        while self.filled < WINDOW && i < data.len() {
            self.h = self.h.rotate_left(1) ^ TABLE[data[i] as usize];
            self.filled += 1;
            i += 1;
            self.len += 1;
            if self.at_boundary() {
                self.reset();
                return Some(i);
            }
        }
        // Roll: a byte entered 64 steps ago has been rotated 64 times (identity on a
        // u32), so XOR-ing its table value removes it from the hash. It is in `data`
        // when this call hashed 64 bytes before it, else in `window` (oldest first
        // from `slot`).
        while i < data.len() {
            let out = if i - first >= WINDOW {
                data[i - WINDOW]
            } else {
                self.window[(self.slot + (i - first)) % WINDOW]
            };
            self.h = self.h.rotate_left(1) ^ TABLE[out as usize] ^ TABLE[data[i] as usize];
            i += 1;
            self.len += 1;
            if self.at_boundary() {
                self.reset();
                return Some(i);
            }
        }
        // Keep the last 64 hashed bytes for the next call.
        let hashed = &data[first..];
        if hashed.len() >= WINDOW {
            self.window
                .copy_from_slice(&hashed[hashed.len() - WINDOW..]);
            self.slot = 0;
        } else {
            for b in hashed {
                self.window[self.slot] = *b;
                self.slot = (self.slot + 1) % WINDOW;
            }
        }
        None
    }

    #[inline(always)]
    fn at_boundary(&self) -> bool {
        self.len >= self.max || (self.len >= self.min && (self.h & self.mask) >= self.mask - 2)
    }

    /// Start a new chunk here (after a cut the caller forced).
    pub fn reset(&mut self) {
        self.h = 0;
        self.slot = 0;
        self.filled = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Chunk lengths of `data` fed in pieces of `piece` bytes.
    fn chunks(c: &mut Chunker, data: &[u8], piece: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = 0;
        for p in data.chunks(piece) {
            let mut rest = p;
            while let Some(n) = c.scan(rest) {
                out.push(cur + n);
                cur = 0;
                rest = &rest[n..];
            }
            cur += rest.len();
        }
        if cur > 0 {
            out.push(cur);
        }
        out
    }

    #[test]
    fn the_table_is_fixed_and_has_no_duplicates() {
        // Pinned: a change of the table changes every boundary (and dedup with
        // snapshots written before).
        assert_eq!(TABLE[0], make_table()[0]);
        let mut sorted = TABLE.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        let ones: u32 = TABLE.iter().map(|v| v.count_ones()).sum();
        // Balanced bits: 256 * 16 expected.
        assert!((3800..4400).contains(&ones), "{ones}");
    }

    #[test]
    fn boundaries_are_deterministic_whatever_the_piece_size() {
        let d = data(3 << 20, 1);
        let a = chunks(&mut Chunker::new(64 << 10), &d, 1 << 20);
        let b = chunks(&mut Chunker::new(64 << 10), &d, 4099);
        let c = chunks(&mut Chunker::new(64 << 10), &d, 1);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.iter().sum::<usize>(), d.len());
        // About 3 MiB / ~60 KiB.
        assert!((25..80).contains(&a.len()), "{} chunks", a.len());
    }

    #[test]
    fn chunks_stay_within_min_and_max() {
        let avg = 4096;
        let mut c = Chunker::new(avg);
        let (min, max) = (c.min_size(), c.max_size());
        assert_eq!((min, max), (1024, 16384));
        let d = data(2 << 20, 7);
        let lens = chunks(&mut c, &d, 65536);
        for l in &lens[..lens.len() - 1] {
            assert!((min..=max).contains(l), "{l}");
        }
        // Constant input has no content to cut at: every cut is forced at max.
        let zeros = vec![0u8; 10 * max + 5];
        let lens = chunks(&mut Chunker::new(avg), &zeros, 65536);
        assert_eq!(lens.len(), 11);
        assert!(lens[..10].iter().all(|l| *l == max));
        assert_eq!(lens[10], 5);
        // The cap: 16 MiB chunks at most, whatever the average.
        assert_eq!(Chunker::new(16 << 20).max_size(), MAX_CHUNK);
    }

    #[test]
    fn an_insertion_leaves_most_chunks_unchanged() {
        use std::collections::HashSet;
        let d = data(8 << 20, 3);
        let mut changed = d.clone();
        let mid = d.len() / 2 + 12345;
        changed.splice(mid..mid, b"some inserted bytes".iter().copied());
        let split = |x: &[u8]| -> Vec<Vec<u8>> {
            let lens = chunks(&mut Chunker::new(64 << 10), x, 1 << 16);
            let mut at = 0;
            lens.iter()
                .map(|l| {
                    at += l;
                    x[at - l..at].to_vec()
                })
                .collect()
        };
        let before = split(&d);
        let after: HashSet<Vec<u8>> = split(&changed).into_iter().collect();
        let kept = before.iter().filter(|c| after.contains(*c)).count();
        assert!(
            kept + 3 >= before.len(),
            "{kept} of {} chunks kept",
            before.len()
        );
        assert!(before.len() > 50);
    }
}
