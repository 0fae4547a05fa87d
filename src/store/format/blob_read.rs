//! Decoding a chunk's blob while it is read, piece by piece, straight into the buffer
//! that will hold the chunk: no buffer for the whole encoded file. The errors are those
//! of `blob::decode_into` over the same bytes, in the same order (CRC before decoding).

use crate::store::format::blob::{self, BlobKind, BLOB, DST_SIZE_TOO_SMALL, HEADER_LEN};
use crate::util::error::{CorruptKind, Error, Result};

/// Bytes read from the file per step: one zstd block and a bit, a few per page cache
/// readahead window.
const PIECE: usize = 128 * 1024;

thread_local! {
    /// The piece being decoded, per thread (readahead threads each have theirs).
    static PIECE_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; PIECE]);
    /// A streaming context that writes into the caller's buffer directly
    /// (`StableOutBuffer`): it keeps no window buffer of its own, only an input block.
    static STREAM_DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decode an unencrypted blob whose bytes `read` yields (as `Read::read`: 0 at the end)
/// into `out`, refusing more than `limit` bytes of output. `out` is cleared and its
/// capacity reused; decoding needs `limit + 1` bytes of it (the extra byte tells "one
/// byte too many" from "exactly the limit"). The whole input is always read, so that a
/// CRC mismatch is reported before (and instead of) what it caused the decoder to find.
/// Encrypted, unknown or truncated headers are read whole and given to `decode_into`.
/// The caller bounds how much `read` yields.
pub fn decode_read_into(
    mut read: impl FnMut(&mut [u8]) -> Result<usize>,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match read(&mut header[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let kind = (got == HEADER_LEN)
        .then(|| BlobKind::from_magic(&header[..8]))
        .flatten();
    let Some(kind @ (BlobKind::Uncompressed | BlobKind::Compressed)) = kind else {
        let mut raw = header[..got].to_vec();
        read_to_end(&mut read, &mut raw)?;
        return blob::decode_into(&raw, limit, out);
    };
    if out.capacity() <= limit {
        out.reserve_exact(limit + 1);
    }
    let stored = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let mut crc = crc32fast::Hasher::new();
    let mut stream = Stream::default();
    PIECE_BUF.with(|p| -> Result<()> {
        let piece = &mut p.borrow_mut()[..];
        STREAM_DCTX.with(|d| -> Result<()> {
            let mut d = d.borrow_mut();
            let dctx = stream_dctx(&mut d)?;
            loop {
                let n = read(piece)?;
                if n == 0 {
                    return Ok(());
                }
                crc.update(&piece[..n]);
                match kind {
                    BlobKind::Compressed => stream.decode(dctx, &piece[..n], limit, out),
                    _ => stream.copy(&piece[..n], limit, out),
                }
            }
        })
    })?;
    let computed = crc.finalize();
    if stored != computed {
        out.clear();
        return Err(Error::corrupt(BLOB, CorruptKind::Crc { stored, computed }));
    }
    let res = stream.finish(kind);
    if res.is_err() {
        out.clear();
    }
    res
}

/// Append everything `read` yields (as `Read::read`: 0 at the end) to `into`.
pub fn read_to_end(
    mut read: impl FnMut(&mut [u8]) -> Result<usize>,
    into: &mut Vec<u8>,
) -> Result<()> {
    PIECE_BUF.with(|p| {
        let piece = &mut p.borrow_mut()[..];
        loop {
            match read(piece)? {
                0 => return Ok(()),
                n => into.extend_from_slice(&piece[..n]),
            }
        }
    })
}

/// The thread's streaming context, reset to the start of a frame.
fn stream_dctx<'a>(
    slot: &'a mut Option<zstd::zstd_safe::DCtx<'static>>,
) -> Result<&'a mut zstd::zstd_safe::DCtx<'static>> {
    let zerr = |code| Error::corrupt(BLOB, CorruptKind::Decode(zstd_error(code)));
    if slot.is_none() {
        let mut d = zstd::zstd_safe::DCtx::create();
        d.set_parameter(zstd::zstd_safe::DParameter::StableOutBuffer(true))
            .map_err(zerr)?;
        *slot = Some(d);
    }
    let d = slot.as_mut().expect("set above");
    d.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
        .map_err(zerr)?;
    Ok(d)
}

fn zstd_error(code: usize) -> String {
    zstd::zstd_safe::get_error_name(code).to_string()
}

/// Where a streaming decode stands: whether any payload came, whether the last frame
/// ended, and the first failure (after which input is only checksummed).
#[derive(Default)]
struct Stream {
    any: bool,
    frame_open: bool,
    failed: Option<CorruptKind>,
}

impl Stream {
    fn copy(&mut self, piece: &[u8], limit: usize, out: &mut Vec<u8>) {
        self.any = true;
        if self.failed.is_some() {
            return;
        }
        if out.len() + piece.len() > limit {
            self.failed = Some(oversized(limit));
            return;
        }
        out.extend_from_slice(piece);
    }

    fn decode(
        &mut self,
        dctx: &mut zstd::zstd_safe::DCtx<'static>,
        piece: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) {
        self.any = true;
        let mut input = zstd::zstd_safe::InBuffer::around(piece);
        while self.failed.is_none() && input.pos() < piece.len() {
            let (in_before, out_before) = (input.pos(), out.len());
            let res = dctx.decompress_stream(
                &mut zstd::zstd_safe::OutBuffer::around_pos(out, out_before),
                &mut input,
            );
            match res {
                Ok(hint) => self.frame_open = hint != 0,
                Err(code) if code == DST_SIZE_TOO_SMALL => self.failed = Some(oversized(limit)),
                Err(code) => self.failed = Some(CorruptKind::Decode(zstd_error(code))),
            }
            if self.failed.is_none()
                && (out.len() > limit || (input.pos() == in_before && out.len() == out_before))
            {
                // More output than allowed, or a full buffer stalling the decoder.
                self.failed = Some(oversized(limit));
            }
        }
    }

    fn finish(self, kind: BlobKind) -> Result<()> {
        let why = match self.failed {
            Some(why) => why,
            // zstd's one-shot call decodes an empty input to 0 bytes; no frame is no zstd
            // stream (spec §2.2).
            None if kind == BlobKind::Compressed && !self.any => {
                CorruptKind::Decode("no zstd frame".into())
            }
            None if self.frame_open => CorruptKind::Decode("zstd frame cut short".into()),
            None => return Ok(()),
        };
        Err(Error::corrupt(BLOB, why))
    }
}

fn oversized(limit: usize) -> CorruptKind {
    CorruptKind::Oversized {
        limit: limit as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::blob::{
        assemble, decode_into, encode, COMPRESSED_BLOB_MAGIC_1_0, ENCRYPTED_BLOB_MAGIC_1_0,
        UNCOMPRESSED_BLOB_MAGIC_1_0,
    };

    /// `decode_read_into` over `raw`, read at most `step` bytes at a time.
    fn streamed(raw: &[u8], step: usize, limit: usize, out: &mut Vec<u8>) -> Result<()> {
        let mut at = 0;
        let read = |buf: &mut [u8]| {
            let n = buf.len().min(step).min(raw.len() - at);
            buf[..n].copy_from_slice(&raw[at..at + n]);
            at += n;
            Ok(n)
        };
        decode_read_into(read, limit, out)
    }

    /// What a result says, without the message text (zstd names its errors differently
    /// for one-shot and streaming calls).
    fn class(r: &Result<()>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(Error::Corrupt { why, .. }) => format!("{:?}", std::mem::discriminant(why)),
            Err(Error::Encrypted { .. }) => "encrypted".into(),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }

    fn oversized_class() -> String {
        class(&Err(Error::corrupt(BLOB, oversized(0))))
    }

    fn decode_class() -> String {
        class(&Err(Error::corrupt(
            BLOB,
            CorruptKind::Decode(String::new()),
        )))
    }

    fn zstd_frame(data: &[u8], content_size: bool) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.include_contentsize(content_size).unwrap();
        if content_size {
            enc.set_pledged_src_size(Some(data.len() as u64)).unwrap();
        }
        std::io::Write::write_all(&mut enc, data).unwrap();
        enc.finish().unwrap()
    }

    /// Blobs good and bad: every encoding of a few payloads, then each with bytes flipped,
    /// cut, or extended, with the CRC left stale and made to match again.
    fn corpus() -> Vec<(Vec<u8>, usize)> {
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let mut blobs = Vec::new();
        for data in [&big[..], b"x", b""] {
            let len = data.len();
            blobs.push((encode(data, true).unwrap(), len));
            blobs.push((encode(data, false).unwrap(), len));
            let mut two = zstd_frame(&data[..len / 2], false);
            two.extend(zstd_frame(&data[len / 2..], true));
            blobs.push((assemble(COMPRESSED_BLOB_MAGIC_1_0, &two), len));
        }
        blobs.push((assemble(COMPRESSED_BLOB_MAGIC_1_0, b""), 0));
        blobs.push((assemble(ENCRYPTED_BLOB_MAGIC_1_0, &[7; 100]), 60));
        let mut bad = Vec::new();
        for (raw, len) in &blobs {
            let n = raw.len();
            for at in [0, 9, 12, 13, n / 2, n - 1] {
                if at < n {
                    let mut b = raw.clone();
                    b[at] ^= 0x40;
                    bad.push((b.clone(), *len));
                    if at >= HEADER_LEN {
                        bad.push((assemble(b[..8].try_into().unwrap(), &b[12..]), *len));
                    }
                }
            }
            for cut in [0, 5, 12, 13, n / 2, n.saturating_sub(1)] {
                let b = &raw[..cut.min(n)];
                bad.push((b.to_vec(), *len));
                if cut > HEADER_LEN {
                    bad.push((assemble(b[..8].try_into().unwrap(), &b[12..]), *len));
                }
            }
            let mut longer = raw.clone();
            longer.extend_from_slice(b"trailing");
            bad.push((longer.clone(), *len));
            bad.push((assemble(raw[..8].try_into().unwrap(), &longer[12..]), *len));
        }
        blobs.extend(bad);
        blobs.push((assemble(UNCOMPRESSED_BLOB_MAGIC_1_0, &[1; 10]), 10));
        blobs
    }

    #[test]
    fn streaming_decodes_and_refuses_what_the_whole_file_decoder_does() {
        let (mut one, mut two) = (Vec::new(), Vec::new());
        let mut seen = std::collections::BTreeSet::new();
        for (i, (raw, len)) in corpus().iter().enumerate() {
            for limit in [*len, len.saturating_sub(1), len / 3, 1 << 24] {
                let whole = decode_into(raw, limit, &mut one);
                for step in [1, 7, 4096, PIECE + 5] {
                    if step == 1 && raw.len() > 20_000 {
                        continue;
                    }
                    let piecewise = streamed(raw, step, limit, &mut two);
                    let what = format!("blob {i}, limit {limit}, step {step}");
                    // A frame both corrupt and longer than the limit may be refused for
                    // either: the streaming decoder sees its declared size first.
                    let either = [oversized_class(), decode_class()];
                    if !(either.contains(&class(&piecewise)) && either.contains(&class(&whole))) {
                        assert_eq!(class(&piecewise), class(&whole), "{what}: {piecewise:?}");
                    }
                    if whole.is_ok() {
                        assert_eq!(two, one, "{what}");
                    } else {
                        assert!(two.is_empty(), "{what}: a failure leaves no bytes");
                    }
                    seen.insert(class(&whole));
                }
            }
        }
        // The corpus reaches every outcome: decoded, and each kind of refusal.
        assert!(seen.len() >= 6, "{seen:?}");
    }

    #[test]
    fn the_buffer_is_decoded_into_in_place() {
        let data = vec![5u8; 100_000];
        let raw = encode(&data, true).unwrap();
        let mut out = Vec::with_capacity(data.len() + 1);
        let ptr = out.as_ptr();
        streamed(&raw, 4096, data.len(), &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(out.as_ptr(), ptr, "not reallocated");
    }
}
