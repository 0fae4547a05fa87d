//! The previous archive of metadata change detection (`--change-detection-mode
//! metadata`, spec §7.1): the group's newest finished snapshot whose archive of this
//! name is split, locked shared for as long as the backup relies on it. Its metadata
//! stream says whether a file was there with the same metadata and size; its payload
//! index says which whole chunks hold that file's PAYLOAD. ctime and inode are not in
//! the archive and are not compared, as in PBS: a file whose content changed while its
//! size and mtime were set back is taken as unchanged (`data` mode reads everything).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::backup::base::recently_verified;
use crate::pxar::decoder::{Archive, Entry, EntryKind};
use crate::pxar::encoder::Metadata;
use crate::pxar::format::{Header, HEADER_SIZE, PAYLOAD_START_MARKER, PAYLOAD_TAIL_MARKER};
use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::IndexReader;
use crate::store::format::archive::ArchiveName;
use crate::store::format::index::ChunkInfo;
use crate::store::format::manifest::VerifyState;
use crate::store::format::names::{BackupDir, BackupGroup};
use crate::store::lock::SharedSnapshotLock;
use crate::store::Datastore;
use crate::util::digest::Digest;
use crate::util::error::Result;

/// Chunks read while looking entries up in the previous metadata stream.
const LOOKUP_CACHE: u64 = 16 << 20;

/// A previous directory's entries by name.
pub(super) type PrevDir = HashMap<Vec<u8>, Entry>;

/// A snapshot whose chunks this backup references: kept locked shared until the
/// snapshot is written, and named (marked failed) when one of those chunks is missing.
pub(super) struct Claimed {
    pub dir: BackupDir,
    pub digests: HashSet<Digest>,
    _lock: SharedSnapshotLock,
}

/// The opened previous archive.
pub(super) struct Previous {
    archive: Archive<IndexReader>,
    payload: IndexReader,
    /// Its payload stream begins with a start marker and ends with a tail marker (as
    /// every valid one does): checked, because the new stream may take both over.
    pub starts_with_marker: bool,
    pub ends_with_tail: bool,
    /// Where reused chunks go to be checked in the background (none: recently verified).
    pub validate: Option<Sender<Digest>>,
    pub what: String,
}

/// Where an unchanged file's PAYLOAD lies in the previous payload stream: `[start, end)`
/// covers its header and bytes; `first..=last` are the chunks holding it.
#[derive(Debug, Clone, Copy)]
pub(super) struct OldPayload {
    pub start: u64,
    pub end: u64,
    pub first: usize,
    pub last: usize,
}

/// Find and open the previous archive of `name` (`root` for `root.pxar`). None, with
/// the reason logged, when there is no usable one: the backup then reads every file.
pub(super) fn open_previous(
    ds: &Datastore,
    group: &BackupGroup,
    name: &str,
    checker: &Sender<Digest>,
) -> Result<Option<(Previous, Claimed)>> {
    let (meta_name, payload_name) = (format!("{name}.mpxar.didx"), format!("{name}.ppxar.didx"));
    for snap in ds.list_snapshots(group)?.into_iter().rev() {
        if !snap.finished {
            continue;
        }
        let dir = snap.dir;
        let lock = match ds.locker().lock_snapshot_shared(&dir) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("{dir}: not used as the previous snapshot ({e}): every file is read");
                return Ok(None);
            }
        };
        let m = match ds.load_manifest(&dir) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("{dir}: not used as the previous snapshot ({e}): every file is read");
                return Ok(None);
            }
        };
        if m.file(&meta_name).is_none() || m.file(&payload_name).is_none() {
            continue;
        }
        if let Some(Ok(VerifyState { ok: false, .. })) = m.verify_state() {
            log::info!(
                "{dir}: failed verification, not used as the previous snapshot: every file of \
                 {name}.pxar is read"
            );
            return Ok(None);
        }
        let what = format!("{dir}/{meta_name}");
        let cache = Arc::new(ChunkCache::new(LOOKUP_CACHE));
        let opened = ArchiveName::parse(&meta_name)
            .and_then(|n| ds.open_pxar(&dir, &m, &n, cache))
            .and_then(|s| {
                let payload = s.payload.expect("a split archive has a payload stream");
                let archive = Archive::open(s.meta, None, what.clone())?;
                Ok((archive, payload))
            });
        let (archive, payload) = match opened {
            Ok(x) => x,
            Err(e) => {
                log::warn!("{what}: not used as the previous archive ({e}): every file is read");
                return Ok(None);
            }
        };
        let marker_at = |off: u64, htype: u64| {
            let want = Header {
                htype,
                full_size: HEADER_SIZE,
            }
            .to_bytes();
            let mut got = [0u8; HEADER_SIZE as usize];
            matches!(payload.read_at(off, &mut got), Ok(n) if n == got.len()) && got == want
        };
        let size = payload.size();
        let starts_with_marker = marker_at(0, PAYLOAD_START_MARKER);
        let ends_with_tail =
            size >= 2 * HEADER_SIZE && marker_at(size - HEADER_SIZE, PAYLOAD_TAIL_MARKER);
        let digests = payload.index().chunks().map(|c| c.digest).collect();
        let validate = (!recently_verified(ds, &m)).then(|| checker.clone());
        log::info!("{what}: previous archive of metadata change detection");
        let prev = Previous {
            archive,
            payload,
            starts_with_marker,
            ends_with_tail,
            validate,
            what,
        };
        let claimed = Claimed {
            dir,
            digests,
            _lock: lock,
        };
        return Ok(Some((prev, claimed)));
    }
    log::info!("no earlier snapshot has {name}.pxar as a split archive: every file is read");
    Ok(None)
}

impl Previous {
    fn listing(
        &self,
        dir: std::result::Result<Entry, crate::util::error::Error>,
    ) -> Option<PrevDir> {
        let listed = dir.and_then(|d| self.archive.list(&d));
        match listed {
            Ok(list) => Some(list.into_iter().map(|e| (e.name.clone(), e)).collect()),
            Err(e) => {
                log::warn!(
                    "{}: a folder not read ({e}): its files are read again",
                    self.what
                );
                None
            }
        }
    }

    /// The previous root folder's entries.
    pub fn root(&self) -> Option<PrevDir> {
        self.listing(self.archive.root())
    }

    /// The entries of a previous folder (an entry of its parent's listing).
    pub fn list(&self, dir: &Entry) -> Option<PrevDir> {
        if !dir.is_dir() {
            return None;
        }
        self.listing(Ok(dir.clone()))
    }

    /// The chunk `i` of the previous payload stream.
    pub fn chunk(&self, i: usize) -> Option<ChunkInfo> {
        self.payload.index().chunk_info(i)
    }

    /// The index of the previous payload stream's last chunk.
    pub fn last_chunk(&self) -> Option<usize> {
        self.payload.index().chunk_count().checked_sub(1)
    }

    /// Where the previous entry's payload is, if the file is unchanged: a regular file
    /// with a PAYLOAD_REF, the same size and the same metadata (mode, flags, uid, gid,
    /// mtime to the nanosecond, xattrs, ACLs, fcaps, quota project id).
    pub fn unchanged(&self, prev: &Entry, meta: &Metadata, size: u64) -> Option<OldPayload> {
        let EntryKind::File { size: s, payload } = &prev.kind else {
            return None;
        };
        let same = *s == size
            && payload.is_ref()
            && prev.stat == meta.stat
            && prev.acl == meta.acl
            && prev.fcaps == meta.fcaps
            && prev.quota_projid == meta.quota_project_id
            && prev.xattrs.len() == meta.xattrs.len()
            && prev
                .xattrs
                .iter()
                .zip(&meta.xattrs)
                .all(|((n, v), x)| *n == x.name && *v == x.value);
        if !same {
            return None;
        }
        let start = payload.offset();
        let end = start.checked_add(HEADER_SIZE)?.checked_add(size)?;
        let index = self.payload.index();
        let (first, _) = index.locate(start)?;
        let (last, _) = index.locate(end - 1)?;
        Some(OldPayload {
            start,
            end,
            first,
            last,
        })
    }
}
