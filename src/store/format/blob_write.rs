//! Encoding plain bytes as unencrypted blobs (spec §2.2) without fresh memory per blob:
//! each thread keeps one zstd context and one output buffer, reused by every chunk it
//! encodes. A backup encodes hundreds of 4 MiB chunks; allocating the context, the
//! compression bound and the assembled blob anew for each one cost a page fault per
//! 4 KiB, which on this project's VM was most of an image backup's system time.

use std::cell::RefCell;

use super::blob::{
    BLOB, COMPRESSED_BLOB_MAGIC_1_0, HEADER_LEN, MAX_BLOB_SIZE, UNCOMPRESSED_BLOB_MAGIC_1_0,
};
use crate::util::error::{Error, Result};

/// zstd level of every compressed blob pbsfs writes (PBS's client uses 1 too).
const LEVEL: i32 = 1;

/// A zstd context and the buffer blobs are assembled in. The buffer only grows: to
/// the largest blob this thread encoded (a chunk: at most 16 MiB and zstd's margin).
#[derive(Default)]
struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl Encoder {
    /// Encode `data` into `self.out`; returns the blob's length there.
    fn encode(&mut self, data: &[u8], compress: bool) -> Result<usize> {
        let bound = zstd::zstd_safe::compress_bound(data.len()).max(data.len());
        if self.out.len() < HEADER_LEN + bound {
            self.out.resize(HEADER_LEN + bound, 0);
        }
        if compress {
            let zstd = match &mut self.zstd {
                Some(z) => z,
                none => none.insert(
                    zstd::bulk::Compressor::new(LEVEL).map_err(|e| Error::io("zstd context", e))?,
                ),
            };
            let n = zstd
                .compress_to_buffer(data, &mut self.out[HEADER_LEN..HEADER_LEN + bound])
                .map_err(|e| Error::io("zstd compress", e))?;
            // Kept only when not larger than the input (the 2024+ rule).
            if n <= data.len() {
                return Ok(self.seal(COMPRESSED_BLOB_MAGIC_1_0, n));
            }
        }
        self.out[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(data);
        Ok(self.seal(UNCOMPRESSED_BLOB_MAGIC_1_0, data.len()))
    }

    /// Write the header before the `payload_len` bytes at `HEADER_LEN`.
    fn seal(&mut self, magic: [u8; 8], payload_len: usize) -> usize {
        let end = HEADER_LEN + payload_len;
        let crc = crc32fast::hash(&self.out[HEADER_LEN..end]);
        self.out[..8].copy_from_slice(&magic);
        self.out[8..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        end
    }
}

thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::default();
}

/// Encode plain bytes as an unencrypted blob and hand it to `f`, in this thread's reused
/// buffer. With `compress`, zstd level 1, kept only when the compressed payload is not
/// larger than the input (2024+ rule). (`f` may itself encode: it then gets a fresh
/// encoder.)
pub fn encode_with<T>(
    data: &[u8],
    compress: bool,
    f: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    if data.len() > MAX_BLOB_SIZE {
        return Err(Error::TooLarge {
            what: BLOB.to_string(),
            size: data.len() as u64,
            limit: MAX_BLOB_SIZE as u64,
        });
    }
    let run = |e: &mut Encoder| {
        let n = e.encode(data, compress)?;
        f(&e.out[..n])
    };
    ENCODER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut e) => run(&mut e),
        Err(_) => run(&mut Encoder::default()),
    })
}

/// `encode_with`, returning the blob as a vector of its own.
pub fn encode(data: &[u8], compress: bool) -> Result<Vec<u8>> {
    encode_with(data, compress, |blob| Ok(blob.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::blob::{assemble, decode};
    use crate::util::testdata::pseudo_random;

    /// What `encode` wrote before the encoder was reused: a fresh context per blob.
    fn reference(data: &[u8], compress: bool) -> Vec<u8> {
        if compress {
            let c = zstd::bulk::compress(data, LEVEL).unwrap();
            if c.len() <= data.len() {
                return assemble(COMPRESSED_BLOB_MAGIC_1_0, &c);
            }
        }
        assemble(UNCOMPRESSED_BLOB_MAGIC_1_0, data)
    }

    #[test]
    fn a_reused_encoder_writes_the_same_blobs_as_a_fresh_one_in_any_order() {
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{i:x} ").into_bytes())
            .collect();
        let inputs = [
            pseudo_random(4 << 20, 1), // incompressible: stored plain
            text.clone(),              // compressible
            b"".to_vec(),              // empty
            vec![0u8; 100],            // small after large: no stale bytes
            pseudo_random(70_000, 2),
            text[..5000].to_vec(),
            pseudo_random(3, 3),
        ];
        for round in 0..2 {
            for (i, data) in inputs.iter().enumerate() {
                for compress in [true, false] {
                    let got = encode(data, compress).unwrap();
                    assert_eq!(
                        got,
                        reference(data, compress),
                        "round {round} input {i} {compress}"
                    );
                    assert_eq!(decode(&got).unwrap(), *data);
                }
            }
        }
    }

    #[test]
    fn encoding_inside_an_encoding_uses_a_second_encoder() {
        let outer = vec![7u8; 10_000];
        let inner = pseudo_random(5000, 9);
        let (a, b) = encode_with(&outer, true, |a| {
            let b = encode(&inner, true)?;
            Ok((a.to_vec(), b))
        })
        .unwrap();
        assert_eq!(a, reference(&outer, true));
        assert_eq!(b, reference(&inner, true));
    }

    #[test]
    fn too_large_input_is_refused_before_any_work() {
        let err = encode_with(&vec![0u8; MAX_BLOB_SIZE + 1], true, |_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
