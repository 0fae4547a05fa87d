//! DataBlob: the container of every chunk, `.blob` file and manifest (spec §2).
//! Magic, CRC-32 over the payload only, raw or zstd payload; encrypted blobs are
//! recognised and refused (no key), never decoded into garbage.

use std::io::Read;

use crate::util::error::{CorruptKind, Error, Result};

/// The largest blob file (manifest, config, log): the largest payload plus the largest
/// header. Anything larger is refused before it is read.
pub const MAX_BLOB_FILE: u64 = (MAX_BLOB_SIZE + ENCRYPTED_HEADER_LEN) as u64;

/// How format errors name a blob; callers add which one.
pub(super) const BLOB: &str = "blob";

/// `sha256("Proxmox Backup uncompressed blob v1.0")[0..8]`
pub(super) const UNCOMPRESSED_BLOB_MAGIC_1_0: [u8; 8] = [66, 171, 56, 7, 190, 131, 112, 161];
/// `sha256("Proxmox Backup zstd compressed blob v1.0")[0..8]`
pub(super) const COMPRESSED_BLOB_MAGIC_1_0: [u8; 8] = [49, 185, 88, 66, 111, 182, 163, 127];
/// `sha256("Proxmox Backup encrypted blob v1.0")[0..8]`
pub const ENCRYPTED_BLOB_MAGIC_1_0: [u8; 8] = [123, 103, 133, 190, 34, 45, 76, 240];
/// `sha256("Proxmox Backup zstd compressed encrypted blob v1.0")[0..8]`
const ENCR_COMPR_BLOB_MAGIC_1_0: [u8; 8] = [230, 89, 27, 191, 11, 191, 216, 11];

/// Header of an unencrypted blob: magic + crc.
pub const HEADER_LEN: usize = 12;
/// Header of an encrypted blob: magic + crc + iv[16] + tag[16].
pub const ENCRYPTED_HEADER_LEN: usize = 44;

/// The code limit on a blob's decoded size (PBS `MAX_BLOB_SIZE`).
pub(super) const MAX_BLOB_SIZE: usize = 128 * 1024 * 1024;
/// The protocol limit on a chunk's plain size.
pub const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;
/// The protocol limit on an encoded blob or chunk: 16 MiB + the encrypted header.
pub const MAX_ENCODED_SIZE: usize = MAX_CHUNK_SIZE + ENCRYPTED_HEADER_LEN;

/// How a blob's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Uncompressed,
    Compressed,
    Encrypted,
    EncryptedCompressed,
}

impl BlobKind {
    pub fn from_magic(magic: &[u8]) -> Option<BlobKind> {
        match <[u8; 8]>::try_from(magic).ok()? {
            UNCOMPRESSED_BLOB_MAGIC_1_0 => Some(BlobKind::Uncompressed),
            COMPRESSED_BLOB_MAGIC_1_0 => Some(BlobKind::Compressed),
            ENCRYPTED_BLOB_MAGIC_1_0 => Some(BlobKind::Encrypted),
            ENCR_COMPR_BLOB_MAGIC_1_0 => Some(BlobKind::EncryptedCompressed),
            _ => None,
        }
    }

    pub fn is_encrypted(self) -> bool {
        matches!(self, BlobKind::Encrypted | BlobKind::EncryptedCompressed)
    }

    fn header_len(self) -> usize {
        if self.is_encrypted() {
            ENCRYPTED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }
}

/// Check magic, length and CRC of an encoded blob; return its kind. The CRC covers only
/// the bytes after the header (spec §2.2; the iv and tag of encrypted blobs excluded).
fn check_header_and_crc(raw: &[u8]) -> Result<BlobKind> {
    if raw.len() < HEADER_LEN {
        return Err(Error::corrupt(
            BLOB,
            CorruptKind::Truncated {
                len: raw.len() as u64,
                need: HEADER_LEN as u64,
            },
        ));
    }
    let kind =
        BlobKind::from_magic(&raw[..8]).ok_or_else(|| Error::corrupt(BLOB, CorruptKind::Magic))?;
    let hlen = kind.header_len();
    if raw.len() < hlen {
        return Err(Error::corrupt(
            BLOB,
            CorruptKind::Truncated {
                len: raw.len() as u64,
                need: hlen as u64,
            },
        ));
    }
    if raw.len() > MAX_BLOB_SIZE + ENCRYPTED_HEADER_LEN {
        return Err(Error::corrupt(
            BLOB,
            CorruptKind::Size {
                len: raw.len() as u64,
                why: "larger than any blob",
            },
        ));
    }
    let stored = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&raw[hlen..]);
    if stored != computed {
        return Err(Error::corrupt(BLOB, CorruptKind::Crc { stored, computed }));
    }
    Ok(kind)
}

/// Decode a blob into its plain bytes, refusing more than `limit` bytes of output.
/// Encrypted blobs fail with `Error::Encrypted` after their CRC is checked.
pub fn decode_limited(raw: &[u8], limit: usize) -> Result<Vec<u8>> {
    let kind = check_header_and_crc(raw)?;
    match kind {
        BlobKind::Uncompressed => {
            let payload = &raw[HEADER_LEN..];
            if payload.len() > limit {
                return Err(Error::corrupt(
                    BLOB,
                    CorruptKind::Oversized {
                        limit: limit as u64,
                    },
                ));
            }
            Ok(payload.to_vec())
        }
        BlobKind::Compressed => zstd_decode(&raw[HEADER_LEN..], limit),
        BlobKind::Encrypted | BlobKind::EncryptedCompressed => Err(Error::Encrypted {
            what: BLOB.to_string(),
        }),
    }
}

/// Decode a blob of at most `MAX_BLOB_SIZE` plain bytes.
pub fn decode(raw: &[u8]) -> Result<Vec<u8>> {
    decode_limited(raw, MAX_BLOB_SIZE)
}

/// Streaming zstd decode: accepts several frames and frames without a content size
/// (older PBS writers), and never allocates past `limit`.
fn zstd_decode(payload: &[u8], limit: usize) -> Result<Vec<u8>> {
    // A decoder context per thread for blobs that say they are small (manifests,
    // configs: a listing decodes thousands, and creating a context cost more than
    // decoding one); larger or unsized ones get their own, so no thread keeps a large
    // window allocated.
    const REUSE_UP_TO: u64 = 1 << 20;
    thread_local! {
        static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
            std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
    }
    let decode = |decoder: &mut dyn Read| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::corrupt(BLOB, CorruptKind::Decode(e.to_string())))?;
        Ok(out)
    };
    let small = matches!(
        zstd::zstd_safe::get_frame_content_size(payload),
        Ok(Some(n)) if n <= REUSE_UP_TO
    );
    let out = if small {
        DCTX.with(|c| {
            let mut ctx = c.borrow_mut();
            // A decode that failed midway leaves the context inside a frame.
            let _ = ctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly);
            let mut decoder = zstd::stream::read::Decoder::with_context(payload, &mut ctx);
            let out = decode(&mut decoder);
            drop(decoder);
            // Later frames may have been large (the size check reads the first only).
            if out.as_ref().map_or(true, |o| o.len() as u64 > REUSE_UP_TO) {
                *ctx = zstd::zstd_safe::DCtx::create();
            }
            out
        })?
    } else {
        decode(
            &mut zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| Error::corrupt(BLOB, CorruptKind::Decode(e.to_string())))?,
        )?
    };
    if out.len() > limit {
        return Err(Error::corrupt(
            BLOB,
            CorruptKind::Oversized {
                limit: limit as u64,
            },
        ));
    }
    Ok(out)
}

/// Decode a chunk's blob into `out`, refusing more than `limit` bytes of output. `out`
/// is cleared and its capacity reused: a buffer of at least `limit` bytes (the index's
/// chunk length, known before decoding) is decoded into by one zstd call, never grown by
/// doubling nor zero-filled first, and a recycled one costs no page faults. Accepts
/// what `decode_limited` accepts (several frames, frames without a content size).
pub fn decode_into(raw: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<()> {
    let kind = check_header_and_crc(raw)?;
    out.clear();
    let oversized = || {
        Error::corrupt(
            BLOB,
            CorruptKind::Oversized {
                limit: limit as u64,
            },
        )
    };
    match kind {
        BlobKind::Uncompressed => {
            let payload = &raw[HEADER_LEN..];
            if payload.len() > limit {
                return Err(oversized());
            }
            out.extend_from_slice(payload);
            Ok(())
        }
        BlobKind::Compressed => {
            // zstd's one-shot call decodes an empty input to 0 bytes, where the streaming
            // decoder (`decode_limited`) finds no frame: no frame is no zstd stream
            // (spec §2.2), so both paths refuse it.
            if raw.len() == HEADER_LEN {
                return Err(Error::corrupt(
                    BLOB,
                    CorruptKind::Decode("no zstd frame".into()),
                ));
            }
            if out.capacity() < limit {
                out.reserve_exact(limit);
            }
            // One decoder context per thread: creating one costs more than a small chunk.
            thread_local! {
                static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
                    std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
            }
            // Writes at most `out.capacity()` bytes; more output is an error.
            let res = DCTX.with(|d| d.borrow_mut().decompress(out, &raw[HEADER_LEN..]));
            match res {
                Ok(n) if n > limit => Err(oversized()),
                Ok(_) => Ok(()),
                Err(code) => {
                    out.clear();
                    if code == DST_SIZE_TOO_SMALL {
                        Err(oversized())
                    } else {
                        let why = zstd::zstd_safe::get_error_name(code).to_string();
                        Err(Error::corrupt(BLOB, CorruptKind::Decode(why)))
                    }
                }
            }
        }
        BlobKind::Encrypted | BlobKind::EncryptedCompressed => Err(Error::Encrypted {
            what: BLOB.to_string(),
        }),
    }
}

/// zstd's return code for "destination buffer is too small": more output than `limit`.
pub(super) const DST_SIZE_TOO_SMALL: usize = 0usize
    .wrapping_sub(zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall as usize);

pub use super::blob_write::{encode, encode_with};

/// A blob of `magic`, the CRC and `payload` as given (tests build odd blobs with it).
#[cfg(test)]
pub(super) fn assemble(magic: [u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn magic_of(s: &str) -> [u8; 8] {
        Sha256::digest(s.as_bytes())[..8].try_into().unwrap()
    }

    #[test]
    fn the_seven_magics_are_sha256_prefixes_of_their_strings() {
        assert_eq!(
            UNCOMPRESSED_BLOB_MAGIC_1_0,
            magic_of("Proxmox Backup uncompressed blob v1.0")
        );
        assert_eq!(
            COMPRESSED_BLOB_MAGIC_1_0,
            magic_of("Proxmox Backup zstd compressed blob v1.0")
        );
        assert_eq!(
            ENCRYPTED_BLOB_MAGIC_1_0,
            magic_of("Proxmox Backup encrypted blob v1.0")
        );
        assert_eq!(
            ENCR_COMPR_BLOB_MAGIC_1_0,
            magic_of("Proxmox Backup zstd compressed encrypted blob v1.0")
        );
        assert_eq!(
            crate::store::format::index::fixed::FIXED_INDEX_MAGIC,
            magic_of("Proxmox Backup fixed sized chunk index v1.0")
        );
        assert_eq!(
            crate::store::format::index::dynamic::DYNAMIC_INDEX_MAGIC,
            magic_of("Proxmox Backup dynamic sized chunk index v1.0")
        );
        assert_eq!(
            CATALOG_MAGIC_FOR_TEST,
            magic_of("Proxmox Backup Catalog file v1.0")
        );
    }

    const CATALOG_MAGIC_FOR_TEST: [u8; 8] = crate::store::CATALOG_MAGIC;

    #[test]
    fn round_trips_both_encodings() {
        let compressible = vec![7u8; 100_000];
        let enc = encode(&compressible, true).unwrap();
        assert_eq!(&enc[..8], &COMPRESSED_BLOB_MAGIC_1_0);
        assert!(enc.len() < 1000);
        assert_eq!(decode(&enc).unwrap(), compressible);

        let plain = encode(&compressible, false).unwrap();
        assert_eq!(&plain[..8], &UNCOMPRESSED_BLOB_MAGIC_1_0);
        assert_eq!(decode(&plain).unwrap(), compressible);

        // Incompressible input stays uncompressed even when compression is asked for.
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let enc = encode(&random, true).unwrap();
        assert_eq!(decode(&enc).unwrap(), random);

        assert_eq!(decode(&encode(b"", true).unwrap()).unwrap(), b"");
    }

    #[test]
    fn one_flipped_payload_bit_is_a_crc_error() {
        for compress in [false, true] {
            let mut enc = encode(&vec![1u8; 5000], compress).unwrap();
            let last = enc.len() - 1;
            enc[last] ^= 0x10;
            let err = decode(&enc).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Corrupt {
                        why: CorruptKind::Crc { .. },
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    /// "hello world" as two zstd frames without a content size, as older writers made
    /// compressed blobs.
    fn hello_world_in_two_frames() -> Vec<u8> {
        let mut payload = Vec::new();
        for part in [&b"hello "[..], &b"world"[..]] {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            enc.include_contentsize(false).unwrap();
            std::io::Write::write_all(&mut enc, part).unwrap();
            payload.extend(enc.finish().unwrap());
        }
        payload
    }

    #[test]
    fn several_zstd_frames_without_content_size_decode() {
        let payload = hello_world_in_two_frames();
        let blob = assemble(COMPRESSED_BLOB_MAGIC_1_0, &payload);
        assert_eq!(decode(&blob).unwrap(), b"hello world");
    }

    /// The thread's reused decoder context: a decode that fails inside a frame (a payload
    /// cut short, with a valid CRC over what is left) leaves nothing behind for the next.
    #[test]
    fn a_failed_decode_does_not_spoil_the_next_on_the_same_thread() {
        let text = b"manifest text, small enough to reuse the context ".repeat(40);
        let good = encode(&text, true).unwrap();
        assert_eq!(&good[..8], &COMPRESSED_BLOB_MAGIC_1_0);
        let cut = assemble(COMPRESSED_BLOB_MAGIC_1_0, &good[HEADER_LEN..good.len() - 7]);
        for _ in 0..3 {
            assert!(matches!(
                decode(&cut),
                Err(Error::Corrupt {
                    why: CorruptKind::Decode(_),
                    ..
                })
            ));
            assert_eq!(decode(&good).unwrap(), text);
        }
        // An oversized result (limit smaller than the content) neither.
        assert!(decode_limited(&good, 10).is_err());
        assert_eq!(decode(&good).unwrap(), text);
    }

    #[test]
    fn encrypted_blobs_are_refused_with_a_clear_error() {
        for magic in [ENCRYPTED_BLOB_MAGIC_1_0, ENCR_COMPR_BLOB_MAGIC_1_0] {
            let mut raw = Vec::new();
            raw.extend_from_slice(&magic);
            let cipher = vec![0xabu8; 64];
            raw.extend_from_slice(&crc32fast::hash(&cipher).to_le_bytes());
            raw.extend_from_slice(&[0u8; 32]);
            raw.extend_from_slice(&cipher);
            let err = decode(&raw).unwrap_err();
            assert!(matches!(err, Error::Encrypted { .. }));
            assert!(err.to_string().contains("key required"));
        }
    }

    #[test]
    fn truncated_and_unknown_blobs_are_corrupt() {
        assert!(matches!(
            decode(&[1, 2, 3]),
            Err(Error::Corrupt {
                why: CorruptKind::Truncated { len: 3, need: 12 },
                ..
            })
        ));
        let mut raw = encode(b"abc", false).unwrap();
        raw[0] ^= 1;
        assert!(matches!(
            decode(&raw),
            Err(Error::Corrupt {
                why: CorruptKind::Magic,
                ..
            })
        ));
    }

    #[test]
    fn decode_into_equals_decode_and_reuses_the_buffer() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let mut out = Vec::new();
        for compress in [true, false] {
            let enc = encode(&data, compress).unwrap();
            decode_into(&enc, data.len(), &mut out).unwrap();
            assert_eq!(out, data);
            // A recycled, larger buffer holding other bytes: only the decoded bytes remain.
            let mut big = vec![0xeeu8; data.len() * 2];
            let ptr = big.as_ptr();
            decode_into(&enc, data.len(), &mut big).unwrap();
            assert_eq!(big, data);
            assert_eq!(big.as_ptr(), ptr, "decoded in place, not reallocated");
            // One byte short of the content: refused, for both encodings.
            assert!(matches!(
                decode_into(&enc, data.len() - 1, &mut out),
                Err(Error::Corrupt {
                    why: CorruptKind::Oversized { .. },
                    ..
                })
            ));
            // Even when the buffer has room for it all.
            let mut roomy = Vec::with_capacity(data.len() * 2);
            assert!(matches!(
                decode_into(&enc, data.len() - 1, &mut roomy),
                Err(Error::Corrupt {
                    why: CorruptKind::Oversized { .. },
                    ..
                })
            ));
        }
        // Several frames without a content size, as older writers made them.
        let payload = hello_world_in_two_frames();
        let blob = assemble(COMPRESSED_BLOB_MAGIC_1_0, &payload);
        decode_into(&blob, 11, &mut out).unwrap();
        assert_eq!(out, b"hello world");
        assert!(decode_into(&blob, 10, &mut out).is_err());
        // Corrupt zstd behind a good CRC is a decode error.
        let blob = assemble(COMPRESSED_BLOB_MAGIC_1_0, &payload[..payload.len() - 3]);
        assert!(matches!(
            decode_into(&blob, 100, &mut out),
            Err(Error::Corrupt {
                why: CorruptKind::Decode(_),
                ..
            })
        ));
        let mut raw = encode(b"abc", false).unwrap();
        raw[0] ^= 1;
        assert!(decode_into(&raw, 3, &mut out).is_err());
    }

    #[test]
    fn decoding_never_exceeds_the_limit() {
        let enc = encode(&vec![0u8; 1 << 20], true).unwrap();
        assert!(matches!(
            decode_limited(&enc, 1000),
            Err(Error::Corrupt {
                why: CorruptKind::Oversized { limit: 1000 },
                ..
            })
        ));
        assert_eq!(decode_limited(&enc, 1 << 20).unwrap().len(), 1 << 20);
    }
}
