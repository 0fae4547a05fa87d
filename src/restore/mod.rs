//! Restore: an image to a file (sparse, every chunk verified), and (in `pxar.rs`, when
//! the pxar decoder lands) an archive to a folder. Above the store: it reads through
//! `IndexReader` and writes only below the target the user named.

mod meta;
mod pxar;

pub use pxar::restore_pxar;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use crate::store::chunks::reader::IndexReader;
use crate::util::error::{Error, IoContext, Result};

/// What a restore did, for its summary line.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub files: u64,
    /// Bytes of content restored (holes included).
    pub bytes: u64,
    /// Bytes left as holes (runs of zeros).
    pub sparse_bytes: u64,
    pub seconds: f64,
}

/// Zero runs at least this long become holes (one file-system block).
const HOLE_MIN: usize = 4096;

/// Options of a restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Replace an existing target (a file) or write into a non-empty folder.
    pub overwrite: bool,
    /// Called with bytes done and total (a progress bar on a terminal); a total of 0
    /// is unknown (a pxar archive's file bytes).
    pub progress: Option<fn(u64, u64)>,
}

/// Restore the stream `reader` describes into the file `target`: verified chunk by
/// chunk, runs of zeros left as holes, the length set exactly. An existing target is
/// refused unless `overwrite`; a target that is not a regular file (a device) is
/// written in place without truncation or holes.
pub fn restore_image(
    reader: &IndexReader,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let existing = std::fs::metadata(target).ok();
    let device = existing
        .as_ref()
        .is_some_and(|m| !m.is_file() && !m.is_dir());
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(Error::IsADirectory {
            what: format!("restore target {}", target.display()),
        });
    }
    if existing.is_some() && !device && !opts.overwrite {
        return Err(Error::AlreadyExists {
            what: format!(
                "restore target {} (use --overwrite to replace it)",
                target.display()
            ),
        });
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create(!device)
        .truncate(!device)
        .custom_flags(libc::O_CLOEXEC)
        .open(target)
        .ctx(format!("restore target {}", target.display()))?;
    let mut report = RestoreReport {
        files: 1,
        ..RestoreReport::default()
    };
    let total = reader.size();
    for i in 0..reader.index().chunk_count() {
        let data = reader.chunk(i)?;
        if device {
            out.write_all(&data).ctx(target.display())?;
        } else {
            report.sparse_bytes += write_sparse(&mut out, &data, target)?;
        }
        report.bytes += data.len() as u64;
        if let Some(p) = opts.progress {
            p(report.bytes, total);
        }
    }
    if !device {
        // Trailing holes: the length comes from set_len, not from a write.
        out.set_len(total).ctx(target.display())?;
    }
    out.sync_all().ctx(target.display())?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Whether `write_sparse` skips the last block of `data` (its file then ends in a hole,
/// whose length only `set_len` gives).
pub(crate) fn ends_in_hole(data: &[u8]) -> bool {
    let last = data.len().saturating_sub(1) / HOLE_MIN * HOLE_MIN;
    let block = &data[last.min(data.len())..];
    block.len() == HOLE_MIN && block.iter().all(|b| *b == 0)
}

/// Write `data` at the current position, seeking over runs of at least `HOLE_MIN`
/// zero bytes (block-aligned within the buffer) instead of writing them. Returns the
/// bytes skipped.
pub(crate) fn write_sparse(out: &mut File, data: &[u8], target: &Path) -> Result<u64> {
    let mut skipped = 0u64;
    let mut pos = 0usize;
    while pos < data.len() {
        let end = (pos + HOLE_MIN).min(data.len());
        let block = &data[pos..end];
        if block.len() == HOLE_MIN && block.iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(HOLE_MIN as i64))
                .ctx(target.display())?;
            skipped += HOLE_MIN as u64;
        } else {
            out.write_all(block).ctx(target.display())?;
        }
        pos = end;
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunks::cache::ChunkCache;
    use crate::store::chunks::ChunkStore;
    use crate::store::files::{random_suffix, Owner};
    use crate::store::format::index::fixed::FixedIndex;
    use crate::store::format::index::Index;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    #[test]
    fn ends_in_hole_is_exactly_when_write_sparse_skips_the_last_block() {
        let z = HOLE_MIN;
        let cases: [(Vec<u8>, bool); 6] = [
            (vec![], false),
            (vec![0; z - 1], false),
            (vec![0; z], true),
            ([vec![1; z], vec![0; z]].concat(), true),
            ([vec![0; z], vec![0; z - 1]].concat(), false),
            ([vec![0; 2 * z - 1], vec![1]].concat(), false),
        ];
        for (i, (data, want)) in cases.iter().enumerate() {
            assert_eq!(ends_in_hole(data), *want, "case {i}");
        }
    }

    #[test]
    fn an_image_restores_byte_exact_with_its_zero_runs_as_holes() {
        let root = std::env::temp_dir().join(format!("pbsfs-restore-{}", random_suffix(8)));
        std::fs::create_dir_all(&root).unwrap();
        let cs = ChunkStore::create(&root, Owner::of(&root).unwrap(), false).unwrap();
        let cs_size = 64 * 1024usize;
        let mut data = vec![0u8; 5 * cs_size + 100];
        data[10..5000].fill(7);
        data[3 * cs_size..3 * cs_size + 10].fill(9);
        let digests = data
            .chunks(cs_size)
            .map(|c| cs.insert_plain(c).unwrap().0)
            .collect();
        let idx = FixedIndex::new(data.len() as u64, cs_size as u64, digests, 0).unwrap();
        let r = IndexReader::new(
            Index::Fixed(idx),
            cs,
            Arc::new(ChunkCache::new(0)),
            "test image",
        );
        let target = root.join("out.img");
        let rep = restore_image(&r, &target, &RestoreOptions::default()).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
        assert!(rep.sparse_bytes >= 4 * cs_size as u64 - 8192, "{rep:?}");
        let md = std::fs::metadata(&target).unwrap();
        assert!(
            md.blocks() * 512 < data.len() as u64 / 2,
            "not sparse: {md:?}"
        );
        // An existing target needs --overwrite.
        let e = restore_image(&r, &target, &RestoreOptions::default()).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        let opts = RestoreOptions {
            overwrite: true,
            progress: None,
        };
        restore_image(&r, &target, &opts).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), data);
        std::fs::remove_dir_all(root).unwrap();
    }
}
