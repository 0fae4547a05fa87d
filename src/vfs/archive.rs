//! Archive files of a snapshot: which ones it shows, their attributes, and reads. A
//! snapshot shows what its manifest lists, plus `client.log.blob` (never listed, spec
//! §1.6; CRC-checked when read); every open checks the index or blob against the
//! manifest (`Datastore::open_archive`, as `cat` does) and reads go through the store's
//! `IndexReader`. When the manifest cannot be read, the archive files found in the
//! folder are still listed, and opening one fails with the manifest's error (EIO).

use std::os::unix::fs::MetadataExt;

use crate::store::chunks::reader::{ArchiveData, SharedBytes};
use crate::store::format::archive::{ArchiveKind, ArchiveName, Storage};
use crate::store::format::manifest::CLIENT_LOG_BLOB_NAME;
use crate::store::format::names::BackupDir;
use crate::store::lock::SharedSnapshotLock;
use crate::util::error::{CorruptKind, Error, Result};
use crate::util::ReadAt;

use super::handles::Handle;
use super::node::{attr_from_md, Node, PxarRef};
use super::{Attr, Kind, Vfs};

/// An open archive file: its verified content source, and the shared snapshot lock that
/// keeps prune and forget away while it is open (as PBS's restore does).
#[derive(Debug)]
pub struct ArchiveHandle {
    data: ArchiveData,
    _lock: SharedSnapshotLock,
}

/// The name an archive shows under: a pxar archive as its folder (`root.pxar`, a split
/// pair once), the payload half of a pair nowhere, every other archive by its short name.
fn shown_name(name: &ArchiveName) -> Option<String> {
    match name.kind() {
        ArchiveKind::SplitPayload => None,
        ArchiveKind::Pxar | ArchiveKind::SplitMeta => name.pxar_folder(),
        _ => Some(name.short().to_string()),
    }
}

impl Vfs {
    /// The archive files snapshot `d` shows, by their short names.
    pub(super) fn list_archives(&self, d: &BackupDir) -> Result<Vec<(String, Node)>> {
        let mut out: Vec<(String, Node)> = Vec::new();
        for name in self.archive_names(d)? {
            let Some(shown) = shown_name(&name) else {
                continue;
            };
            if out.iter().any(|(n, _)| *n == shown) {
                log::debug!("snapshot {d}: {name} hides behind an earlier name");
                continue;
            }
            match self.archive_node(d, &name) {
                Ok(n) => out.push((shown, n)),
                Err(e) => log::debug!("snapshot {d}: skipping {name}: {e}"),
            }
        }
        Ok(out)
    }

    /// The archive that `short` names in snapshot `d`, if it shows one.
    pub(super) fn lookup_archive(&self, d: &BackupDir, short: &str) -> Result<Option<Node>> {
        match self
            .archive_names(d)?
            .into_iter()
            .find(|n| shown_name(n).as_deref() == Some(short))
        {
            Some(name) => self.archive_node(d, &name).map(Some),
            None => Ok(None),
        }
    }

    /// Listed in the manifest (or, when it cannot be read, found in the folder), plus
    /// `client.log.blob` when present.
    fn archive_names(&self, d: &BackupDir) -> Result<Vec<ArchiveName>> {
        let summary = self.snap_summary(d)?;
        let mut names = match &summary.files {
            Some(Ok(files)) => files.iter().map(|f| f.name.clone()).collect(),
            Some(Err(e)) => return Err(e.clone()),
            None => self.ds.snapshot_files(d)?,
        };
        let log_present = self
            .ds
            .fs()
            .is_file(&self.ds.snapshot_path(d).join(CLIENT_LOG_BLOB_NAME));
        if log_present && !names.iter().any(|n| n.kind() == ArchiveKind::ClientLog) {
            names.push(ArchiveName::parse(CLIENT_LOG_BLOB_NAME)?);
        }
        Ok(names)
    }

    /// The node of an archive: keyed by the checksum the manifest gives it (or the file's
    /// identity when the manifest has none), so new content is a new inode.
    pub(super) fn archive_node(&self, d: &BackupDir, name: &ArchiveName) -> Result<Node> {
        let summary = self.snap_summary(d).ok();
        let listed = summary.as_ref().and_then(|s| s.listed(name.file()));
        let tag = match listed {
            Some(entry) => entry.csum.to_hex(),
            None => {
                let path = self.ds.snapshot_path(d).join(name.file());
                let md = self.ds.fs().metadata(&path)?;
                format!(
                    "i{}-{}.{}-{}",
                    md.ino(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.len()
                )
            }
        };
        if name.pxar_folder().is_some() {
            return Ok(Node::PxarRoot(PxarRef {
                dir: d.clone(),
                file: name.clone(),
                tag,
            }));
        }
        Ok(Node::Archive {
            dir: d.clone(),
            file: name.clone(),
            tag,
        })
    }

    /// Attributes: read-only, the file's owner and mtime, the size of the content a
    /// read returns (image or stream length, decoded blob size).
    pub(super) fn archive_attr(
        &self,
        node: &Node,
        d: &BackupDir,
        name: &ArchiveName,
    ) -> Result<Attr> {
        let path = self.ds.snapshot_path(d).join(name.file());
        let md = match self.ds.fs().metadata(&path) {
            Ok(md) => md,
            Err(e) if matches!(e.kind(), Error::NotFound { .. }) => {
                // Listed by the manifest, gone from the folder: damage, not absence.
                return Err(Error::corrupt(
                    format!("{d}/{name}"),
                    CorruptKind::Format("listed in the manifest but missing".into()),
                ));
            }
            Err(e) => return Err(e),
        };
        let size = self.archive_size(node, d, name, &md)?;
        Ok(attr_from_md(Kind::File, &md, 0o444, size))
    }

    fn archive_size(
        &self,
        node: &Node,
        d: &BackupDir,
        name: &ArchiveName,
        md: &std::fs::Metadata,
    ) -> Result<u64> {
        if let Some(s) = self.sizes.get(node) {
            return Ok(s);
        }
        let summary = self.snap_summary(d)?;
        let listed = summary.listed(name.file());
        let size = match (&summary.files, name.kind().storage()) {
            (Some(Ok(_)), Storage::FixedIndex | Storage::DynamicIndex) => match listed {
                Some(entry) => entry.size,
                None => md.len(),
            },
            // A blob shows its decoded size, which only decoding tells (kept with the
            // summary, so a listing decodes each blob once).
            (Some(Ok(_)), Storage::Blob) => match listed.and_then(|l| l.decoded.get()) {
                Some(size) => *size,
                None => {
                    let view = self.snap_view(d)?;
                    match view.manifest() {
                        Ok((m, _)) => match self.ds.open_archive(d, m, name, self.cache.clone()) {
                            Ok(data) => {
                                // Kept with the summary if both describe this blob.
                                let csum = m.file(name.file()).map(|e| e.csum);
                                if let Some(l) = listed.filter(|l| Some(l.csum) == csum) {
                                    let _ = l.decoded.set(data.size());
                                }
                                data.size()
                            }
                            // The open that reads it reports why; until then, the file size.
                            Err(_) => md.len(),
                        },
                        Err(_) => md.len(),
                    }
                }
            },
            _ => md.len(),
        };
        self.sizes.insert(node.clone(), size);
        Ok(size)
    }

    /// Open an archive: lock the snapshot shared, check its index or blob against the
    /// manifest.
    pub(super) fn open_archive(&self, d: &BackupDir, name: &ArchiveName) -> Result<ArchiveHandle> {
        self.ds.check_readable()?;
        let lock = self.ds.locker().lock_snapshot_shared(d)?;
        let view = self.snap_view(d)?;
        let (m, _) = view.manifest()?;
        let data = match self.ds.open_archive(d, m, name, self.cache.clone())? {
            ArchiveData::Index(r) => {
                ArchiveData::Index(Box::new(r.with_readahead(self.prefetch.clone())))
            }
            blob @ ArchiveData::Blob(_) => blob,
        };
        Ok(ArchiveHandle { data, _lock: lock })
    }

    /// `size` bytes at `offset` (fewer only at the end of the file).
    pub(super) fn read_archive(
        &self,
        h: &ArchiveHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>> {
        Ok(match self.archive_bytes(h, offset, size)? {
            SharedBytes::Owned(v) => v,
            shared => shared.as_ref().to_vec(),
        })
    }

    fn archive_bytes(&self, h: &ArchiveHandle, offset: u64, size: u32) -> Result<SharedBytes> {
        match &h.data {
            ArchiveData::Index(r) => r.read_shared(offset, size as usize),
            ArchiveData::Blob(data) => {
                let total = data.len() as u64;
                let want = (size as u64).min(total.saturating_sub(offset)) as usize;
                let mut buf = vec![0u8; want];
                let n = data.as_slice().read_at(offset, &mut buf)?;
                buf.truncate(n);
                Ok(SharedBytes::Owned(buf))
            }
        }
    }

    /// A READ of handle `fh`, as `read` answers it, but an archive's bytes as a slice of
    /// the cached verified chunk when the range lies in one: the reply is written from
    /// it, with no copy in between.
    pub fn read_shared(&self, fh: u64, offset: u64, size: u32) -> Result<SharedBytes> {
        let archive = match self.handles.lock().get(&fh) {
            Some(Handle::Archive(a)) => Some(a.clone()),
            _ => None,
        };
        match archive {
            Some(a) => self.archive_bytes(&a, offset, size),
            None => self.read(fh, offset, size).map(SharedBytes::Owned),
        }
    }
}
