//! Editable metadata files (snapshot `notes` and `verify_state`, group `notes`) and the
//! read-only `manifest.json`: their content, the write-time checks, the commit of one
//! save as one transaction, and the per-handle buffer with the commit rules of
//! ARCHITECTURE §3 (flush when written since the last commit, fsync when dirty, release
//! when still dirty, a poisoned handle never commits).

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde_json::Value;

use crate::store::format::archive::ArchiveName;
use crate::store::format::manifest::{Manifest, VerifyState, MANIFEST_BLOB_NAME};
use crate::store::format::names::{BackupDir, BackupGroup};
use crate::store::format::notes::MAX_NOTES_LEN;
use crate::util::error::{Error, Result};
use crate::util::upid::{Upid, PBSFS_EDIT};

use super::node::{attr_from_md, systime, Node};
use super::{scope, Attr, Kind, Vfs};

/// `verify_state` content is a small JSON object; anything longer is refused.
const MAX_VERIFY_STATE_LEN: usize = 64 * 1024;
/// Who a state typed by hand through the mount is attributed to.
const EDIT_AUTHID: &str = "root@pam";
/// Snapshot views kept at most; the least used go beyond (they only save decoding).
pub const MAX_VIEWS: usize = 512;
/// Snapshot summaries kept at most: enough for a listing of 10,000 snapshots to decode
/// no manifest the second time (about 0.5 KiB each).
pub const MAX_SUMMARIES: usize = 16_384;

/// The identity of a manifest file: inode, mtime, size.
type Stamp = (u64, i64, i64, u64);

fn stamp_of(md: &std::fs::Metadata) -> Stamp {
    (md.ino(), md.mtime(), md.mtime_nsec(), md.len())
}

/// An archive a manifest lists.
#[derive(Debug)]
pub struct Listed {
    pub name: ArchiveName,
    pub csum: crate::Digest,
    /// fidx/didx: content size; blob: encoded size.
    pub size: u64,
    /// A blob's decoded size, once known.
    pub decoded: OnceLock<u64>,
}

/// What listings and `stat` need of a snapshot's manifest, without the manifest: many
/// more of these are kept than full views, so listing a large store again decodes no
/// manifest whose file is unchanged.
#[derive(Debug)]
pub struct SnapSummary {
    stamp: Stamp,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
    /// Sizes of `notes`, `verify_state` and `manifest.json` (0 when unreadable).
    pub notes_len: u64,
    pub verify_state_len: u64,
    pub json_len: u64,
    /// The archives the manifest lists (names that do not parse left out), or why its
    /// file list is unusable; `None` when the manifest cannot be read at all.
    pub files: Option<Result<Vec<Listed>>>,
}

impl SnapSummary {
    fn of(view: &SnapView) -> SnapSummary {
        let len = |r: Result<usize>| r.unwrap_or(0) as u64;
        let files = view.manifest.as_ref().ok().map(|(m, _)| {
            m.files().map(|files| {
                files
                    .into_iter()
                    .filter_map(|f| match ArchiveName::parse(&f.filename) {
                        Ok(name) => Some(Listed {
                            name,
                            csum: f.csum,
                            size: f.size,
                            decoded: OnceLock::new(),
                        }),
                        Err(e) => {
                            log::debug!("not showing {}: {e}", f.filename);
                            None
                        }
                    })
                    .collect()
            })
        });
        SnapSummary {
            stamp: view.stamp,
            mtime: view.mtime,
            uid: view.uid,
            gid: view.gid,
            notes_len: len(view.notes().map(|n| n.len())),
            verify_state_len: len(view.verify_state_text().map(|t| t.len())),
            json_len: len(view.json().map(<[u8]>::len)),
            files,
        }
    }

    /// The listed archive of file name `file`.
    pub fn listed(&self, file: &str) -> Option<&Listed> {
        match &self.files {
            Some(Ok(v)) => v.iter().find(|l| l.name.file() == file),
            _ => None,
        }
    }
}

/// A snapshot's manifest as the mount shows it, valid while the blob's stat is unchanged.
#[derive(Debug)]
pub struct SnapView {
    stamp: Stamp,
    /// The parsed manifest and its decoded JSON bytes, or why it cannot be read.
    pub manifest: Result<(Manifest, Vec<u8>)>,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

impl SnapView {
    /// The manifest, or the error that reading it gave (EIO for a damaged one).
    pub fn manifest(&self) -> Result<&(Manifest, Vec<u8>)> {
        self.manifest.as_ref().map_err(Error::clone)
    }

    /// `unprotected.notes`, byte-exact (empty when unset).
    pub fn notes(&self) -> Result<Vec<u8>> {
        Ok(self.manifest()?.0.notes().unwrap_or("").as_bytes().to_vec())
    }

    /// `unprotected.verify_state` as pretty JSON plus a newline, empty when unset.
    fn verify_state_text(&self) -> Result<Vec<u8>> {
        Ok(match self.manifest()?.0.unprotected().get("verify_state") {
            None => Vec::new(),
            Some(v) => {
                let mut s = serde_json::to_string_pretty(v).expect("a JSON value serialises");
                s.push('\n');
                s.into_bytes()
            }
        })
    }

    /// The decoded manifest, as stored.
    pub fn json(&self) -> Result<&[u8]> {
        Ok(&self.manifest()?.1)
    }
}

/// An editable file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaFile {
    SnapNotes(BackupDir),
    VerifyState(BackupDir),
    GroupNotes(BackupGroup),
}

impl MetaFile {
    pub fn from_node(node: &Node) -> Option<MetaFile> {
        match node {
            Node::SnapNotes(d) => Some(MetaFile::SnapNotes(d.clone())),
            Node::VerifyState(d) => Some(MetaFile::VerifyState(d.clone())),
            Node::GroupNotes(g) => Some(MetaFile::GroupNotes(g.clone())),
            _ => None,
        }
    }

    pub fn what(&self) -> String {
        match self {
            MetaFile::SnapNotes(d) => format!("notes of snapshot {d}"),
            MetaFile::VerifyState(d) => format!("verify_state of snapshot {d}"),
            MetaFile::GroupNotes(g) => format!("notes of group {g}"),
        }
    }

    /// Write-time check of a buffer that may still grow: reject only what can never
    /// become valid.
    fn check_partial(&self, buf: &[u8]) -> Result<()> {
        match self {
            MetaFile::SnapNotes(_) | MetaFile::GroupNotes(_) => {
                if buf.len() > MAX_NOTES_LEN {
                    return Err(Error::TooLarge {
                        what: self.what(),
                        size: buf.len() as u64,
                        limit: MAX_NOTES_LEN as u64,
                    });
                }
                match std::str::from_utf8(buf) {
                    Ok(_) => Ok(()),
                    // An incomplete sequence at the end may be completed by the next write.
                    Err(e) if e.error_len().is_none() => Ok(()),
                    Err(e) => Err(Error::InvalidUtf8 {
                        what: self.what(),
                        offset: e.valid_up_to(),
                    }),
                }
            }
            MetaFile::VerifyState(_) => {
                if buf.len() > MAX_VERIFY_STATE_LEN {
                    return Err(Error::TooLarge {
                        what: self.what(),
                        size: buf.len() as u64,
                        limit: MAX_VERIFY_STATE_LEN as u64,
                    });
                }
                let t = buf.trim_ascii();
                if t.is_empty() || t[0] == b'{' || b"ok".starts_with(t) || b"failed".starts_with(t)
                {
                    Ok(())
                } else {
                    Err(Error::InvalidVerifyState {
                        what: self.what(),
                        why: "write ok, failed, a JSON object {\"state\", \"upid\"} or nothing"
                            .into(),
                    })
                }
            }
        }
    }
}

/// The new `verify_state` value of a save: `None` removes the key.
fn parse_verify_state(ds_name: &str, d: &BackupDir, buf: &[u8]) -> Result<Option<Value>> {
    let what = format!("verify_state of snapshot {d}");
    let t = buf.trim_ascii();
    let ok = match t {
        b"" => return Ok(None),
        b"ok" => true,
        b"failed" => false,
        _ => {
            let v: Value = serde_json::from_slice(t).map_err(|e| Error::InvalidVerifyState {
                what: what.clone(),
                why: format!("not ok, failed or valid JSON: {e}"),
            })?;
            let vs = VerifyState::from_value(&v).map_err(|e| e.context(&what))?;
            return Ok(Some(vs.to_value()));
        }
    };
    let worker_id = d.worker_id(ds_name);
    let upid = Upid::new(PBSFS_EDIT, &worker_id, EDIT_AUTHID).to_string();
    Ok(Some(VerifyState { ok, upid }.to_value()))
}

/// One open handle of a metadata file.
#[derive(Debug)]
pub struct MetaHandle {
    pub file: MetaFile,
    pub pid: u32,
    pub writable: bool,
    pub append: bool,
    /// What this handle sees: the committed content at open (empty with `O_TRUNC`) plus
    /// its own writes.
    pub buf: Vec<u8>,
    /// `buf` differs from what this handle last committed (a write or a truncation).
    pub dirty: bool,
    /// A `write` arrived since the last commit.
    pub wrote: bool,
    /// A rejected write or a failed commit: later writes, flushes and fsyncs return it,
    /// nothing is ever committed.
    pub poisoned: Option<Error>,
}

impl MetaHandle {
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<u32> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let at = if self.append {
            self.buf.len()
        } else {
            offset as usize
        };
        let end = at.saturating_add(data.len());
        // Refuse before allocating: the limits are far below any sane offset.
        let limit = match self.file {
            MetaFile::VerifyState(_) => MAX_VERIFY_STATE_LEN,
            _ => MAX_NOTES_LEN,
        };
        let mut candidate;
        if end > limit {
            candidate = vec![0u8; limit + 1];
        } else {
            candidate = self.buf.clone();
            if candidate.len() < end {
                candidate.resize(end, 0);
            }
            candidate[at..end].copy_from_slice(data);
        }
        if let Err(e) = self.file.check_partial(&candidate) {
            log::warn!("refused write: {e}");
            self.poisoned = Some(e.clone());
            return Err(e);
        }
        self.buf = candidate;
        self.dirty = true;
        self.wrote = true;
        Ok(data.len() as u32)
    }

    pub fn truncate(&mut self, size: u64) -> Result<()> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let limit = match self.file {
            MetaFile::VerifyState(_) => MAX_VERIFY_STATE_LEN,
            _ => MAX_NOTES_LEN,
        };
        if size as usize > limit {
            return Err(Error::TooLarge {
                what: self.file.what(),
                size,
                limit: limit as u64,
            });
        }
        self.buf.resize(size as usize, 0);
        self.dirty = true;
        Ok(())
    }
}

impl Vfs {
    /// The manifest view of a snapshot, reloaded when `index.json.blob` changed.
    pub(super) fn snap_view(&self, d: &BackupDir) -> Result<Arc<SnapView>> {
        let path = self.ds.snapshot_path(d).join(MANIFEST_BLOB_NAME);
        let md = self.ds.fs().metadata(&path)?;
        Ok(self.view_of(d, &md))
    }

    /// The view of the manifest whose file has metadata `md`: the kept one if it is of
    /// the same file, else decoded now.
    fn view_of(&self, d: &BackupDir, md: &std::fs::Metadata) -> Arc<SnapView> {
        let stamp = stamp_of(md);
        if let Some(v) = self.views.get(d) {
            if v.stamp == stamp {
                return v;
            }
        }
        let manifest = self.ds.load_manifest_json(d);
        let view = Arc::new(SnapView {
            stamp,
            manifest,
            mtime: systime(md.mtime(), md.mtime_nsec()),
            uid: md.uid(),
            gid: md.gid(),
        });
        self.views.insert(d.clone(), view.clone());
        view
    }

    /// The summary of a snapshot's manifest, checked against its file (once per
    /// READDIRPLUS, `scope.rs`), decoded again only when the file changed.
    pub(super) fn snap_summary(&self, d: &BackupDir) -> Result<Arc<SnapSummary>> {
        if let Some(s) = scope::summary(self, d) {
            return Ok(s);
        }
        let path = self.ds.snapshot_path(d).join(MANIFEST_BLOB_NAME);
        let md = self.ds.fs().metadata(&path)?;
        let s = match self.summaries.get(d) {
            Some(s) if s.stamp == stamp_of(&md) => s,
            _ => {
                let s = Arc::new(SnapSummary::of(&self.view_of(d, &md)));
                self.summaries.insert(d.clone(), s.clone());
                s
            }
        };
        scope::keep_summary(self, d, &s);
        Ok(s)
    }

    /// Forget what is kept of `d`'s manifest (changed through the mount).
    pub(super) fn forget_snapshot_manifest(&self, d: &BackupDir) {
        self.summaries.remove(d);
        self.views.remove(d);
    }

    /// Attributes of `notes`, `verify_state` and `manifest.json`: the committed size,
    /// the manifest's (or group notes file's) owner and mtime; 0644 when editable.
    pub(super) fn meta_attr(&self, node: &Node) -> Result<Attr> {
        let editable = if self.read_only { 0o444 } else { 0o644 };
        match node {
            Node::GroupNotes(g) => {
                let p = self.ds.group_path(g).join(crate::store::GROUP_NOTES);
                let md = match self.ds.fs().metadata(&p) {
                    Ok(md) => md,
                    Err(e) if matches!(e.kind(), Error::NotFound { .. }) => {
                        let md = self.ds.fs().metadata(&self.ds.group_path(g))?;
                        return Ok(attr_from_md(Kind::File, &md, editable, 0));
                    }
                    Err(e) => return Err(e),
                };
                Ok(attr_from_md(Kind::File, &md, editable, md.len()))
            }
            Node::SnapNotes(d) | Node::VerifyState(d) | Node::ManifestJson(d) => {
                let s = self.snap_summary(d)?;
                // A damaged manifest still lets `ls -l` show these (size 0); opening
                // one gives the manifest's error.
                let (size, perm) = match node {
                    Node::SnapNotes(_) => (s.notes_len, editable),
                    Node::VerifyState(_) => (s.verify_state_len, editable),
                    _ => (s.json_len, 0o444),
                };
                Ok(Attr {
                    ino: 0,
                    kind: Kind::File,
                    size,
                    perm,
                    uid: s.uid,
                    gid: s.gid,
                    mtime: s.mtime,
                    nlink: 1,
                    rdev: 0,
                })
            }
            other => Err(Error::invalid(other.describe(), "not a metadata file")),
        }
    }

    /// The committed content of an editable file.
    pub(super) fn meta_committed(&self, f: &MetaFile) -> Result<Vec<u8>> {
        match f {
            MetaFile::SnapNotes(d) => self.snap_view(d)?.notes(),
            MetaFile::VerifyState(d) => self.snap_view(d)?.verify_state_text(),
            MetaFile::GroupNotes(g) => self.ds.group_notes(g),
        }
    }

    /// One save: the full content check, then one transaction. Logged either way.
    pub(super) fn meta_commit(&self, f: &MetaFile, content: &[u8]) -> Result<()> {
        let res = match f {
            MetaFile::SnapNotes(d) => self.ds.set_snapshot_notes(d, content),
            MetaFile::VerifyState(d) => {
                parse_verify_state(&self.ds.name(), d, content).and_then(|v| {
                    self.ds.update_manifest(d, |u| {
                        match v {
                            Some(v) => u.insert("verify_state".into(), v),
                            None => u.remove("verify_state"),
                        };
                        Ok(())
                    })
                })
            }
            MetaFile::GroupNotes(g) => self.ds.set_group_notes(g, content),
        };
        match &res {
            Ok(()) => {
                log::info!("commit: {} ({} bytes)", f.what(), content.len());
                self.supersede_pending(f);
                self.after_commit(f);
            }
            Err(e) => log::warn!("commit of {} failed: {e}", f.what()),
        }
        res
    }

    /// Commit a handle's buffer; a failure poisons it.
    pub(super) fn meta_commit_handle(&self, h: &mut MetaHandle) -> Result<()> {
        match self.meta_commit(&h.file, &h.buf) {
            Ok(()) => {
                h.dirty = false;
                h.wrote = false;
                Ok(())
            }
            Err(e) => {
                h.poisoned = Some(e.clone());
                Err(e)
            }
        }
    }

    pub(super) fn meta_flush(&self, h: &mut MetaHandle) -> Result<()> {
        if let Some(e) = &h.poisoned {
            return Err(e.clone());
        }
        if h.wrote {
            self.meta_commit_handle(h)?;
        }
        Ok(())
    }

    pub(super) fn meta_fsync(&self, h: &mut MetaHandle) -> Result<()> {
        if let Some(e) = &h.poisoned {
            return Err(e.clone());
        }
        if h.dirty {
            self.meta_commit_handle(h)?;
        }
        Ok(())
    }

    /// The last close: a still-dirty handle (a truncate-only save) commits now; errors
    /// can only be logged (`meta_commit` did).
    pub(super) fn meta_release(&self, h: &mut MetaHandle) {
        if h.poisoned.is_none() && h.dirty {
            let _ = self.meta_commit_handle(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::names::BackupNamespace;

    fn dir() -> BackupDir {
        BackupDir::parse(&BackupNamespace::root(), "vm/100/2024-05-02T08:11:33Z").unwrap()
    }

    #[test]
    fn partial_checks() {
        let vs = MetaFile::VerifyState(dir());
        for ok in [
            &b""[..],
            b"  ",
            b"o",
            b"ok\n",
            b"fai",
            b" failed ",
            b"{\"state",
        ] {
            assert!(vs.check_partial(ok).is_ok(), "{ok:?}");
        }
        for bad in [&b"garbage"[..], b"oks", b"failedx", b"[1]", b"OK"] {
            assert_eq!(vs.check_partial(bad).unwrap_err().errno(), libc::EINVAL);
        }
        let n = MetaFile::SnapNotes(dir());
        assert!(n.check_partial("grüß".as_bytes()).is_ok());
        assert!(n.check_partial(&"ü".as_bytes()[..1]).is_ok());
        assert_eq!(
            n.check_partial(&[b'a', 0xff, b'b']).unwrap_err().errno(),
            libc::EILSEQ
        );
        assert_eq!(
            n.check_partial(&vec![b'a'; MAX_NOTES_LEN + 1])
                .unwrap_err()
                .errno(),
            libc::EFBIG
        );
    }

    #[test]
    fn verify_state_words_get_a_valid_upid() {
        let v = parse_verify_state("store", &dir(), b" ok\n")
            .unwrap()
            .unwrap();
        let vs = VerifyState::from_value(&v).unwrap();
        assert!(vs.ok);
        assert_eq!(Upid::parse(&vs.upid).unwrap().worker_type, PBSFS_EDIT);
        assert!(parse_verify_state("s", &dir(), b" \n").unwrap().is_none());
        assert_eq!(
            parse_verify_state("s", &dir(), b"{\"state\":\"ok\"}")
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn a_rejected_write_poisons_the_handle() {
        let mut h = MetaHandle {
            file: MetaFile::VerifyState(dir()),
            pid: 1,
            writable: true,
            append: false,
            buf: Vec::new(),
            dirty: true,
            wrote: false,
            poisoned: None,
        };
        assert_eq!(h.write(0, b"garbage\n").unwrap_err().errno(), libc::EINVAL);
        assert!(h.buf.is_empty());
        assert_eq!(h.write(0, b"ok").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(h.truncate(0).unwrap_err().errno(), libc::EINVAL);
    }
}
