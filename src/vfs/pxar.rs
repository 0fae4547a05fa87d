//! Entries of pxar archives (ARCHITECTURE §2): a pxar archive shows as a folder with
//! its root entry's mode, owner and mtime; entering a directory decodes only that
//! directory (its goodbye table); inode numbers derive from stream offsets; a hardlink
//! shows its target's inode and content; xattrs, POSIX ACLs (as the
//! `system.posix_acl_*` xattrs `getfacl` reads) and file capabilities are listed and
//! read. Archives and entries are cached in bounded tables; file reads go through the
//! store's verified `IndexReader`, so a corrupt chunk fails only the reads that touch it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use crate::pxar::acl;
use crate::pxar::decoder::{Archive, Content, Entry, EntryKind};
use crate::pxar::format::{self, Stat};
use crate::store::chunks::reader::IndexReader;
use crate::store::lock::SharedSnapshotLock;
use crate::util::error::{Error, Result};

use super::node::{systime, Node, PxarRef};
use super::{Attr, Kind, Vfs};

pub(super) type PxarArchive = Archive<IndexReader>;

/// Where an entry is: the stream offsets of its FILENAME and of its end (what the
/// decoder needs to decode it again).
pub(super) type At = (u64, u64);

/// Open archives kept (each holds its index in memory).
pub(super) const MAX_ARCHIVES: usize = 8;
/// Decoded entries kept (each a few hundred bytes).
pub(super) const MAX_ENTRIES: usize = 16384;

/// An open file inside a pxar archive: its located content and the snapshot lock that
/// keeps prune and forget away meanwhile.
#[derive(Debug)]
pub struct PxarHandle {
    archive: Arc<PxarArchive>,
    content: Content,
    _lock: SharedSnapshotLock,
}

/// The kind a pxar entry shows as.
fn kind_of(stat: &Stat) -> Kind {
    match stat.file_type() {
        format::S_IFDIR => Kind::Dir,
        format::S_IFLNK => Kind::Symlink,
        format::S_IFBLK => Kind::BlockDevice,
        format::S_IFCHR => Kind::CharDevice,
        format::S_IFIFO => Kind::Fifo,
        format::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    }
}

/// Linux's `new_encode_dev` for the 32-bit device number FUSE carries.
fn encode_dev(major: u64, minor: u64) -> u32 {
    ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)) as u32
}

impl Vfs {
    /// The open archive `a`, from the table or opened (checked against the manifest).
    pub(super) fn pxar_archive(&self, a: &PxarRef) -> Result<Arc<PxarArchive>> {
        if let Some(ar) = self.pxars.get(a) {
            return Ok(ar);
        }
        self.ds.check_readable()?;
        let view = self.snap_view(&a.dir)?;
        let (m, _) = view.manifest()?;
        let streams = self.ds.open_pxar(&a.dir, m, &a.file, self.cache.clone())?;
        let meta = streams.meta.with_readahead(self.prefetch.clone());
        let payload = streams
            .payload
            .map(|p| p.with_readahead(self.prefetch.clone()));
        let what = format!("{}/{}", a.dir, a.file);
        let ar = Arc::new(Archive::open(meta, payload, what)?);
        self.pxars.insert(a.clone(), ar.clone());
        Ok(ar)
    }

    /// The entry at `at` (`None`: the root), decoded once and kept.
    fn pxar_entry(&self, a: &PxarRef, at: Option<At>) -> Result<(Arc<PxarArchive>, Arc<Entry>)> {
        let ar = self.pxar_archive(a)?;
        let entry = match at {
            None => Arc::new(ar.root()?),
            Some((off, end)) => match self.pxar_entries.get(&(a.clone(), off)) {
                Some(e) => e,
                None => {
                    let e = Arc::new(ar.entry_at(off, end)?);
                    self.pxar_entries.insert((a.clone(), off), e.clone());
                    e
                }
            },
        };
        Ok((ar, entry))
    }

    /// The node a child shows as: a hardlink is its target (same inode, same content).
    fn pxar_child(&self, a: &PxarRef, ar: &PxarArchive, e: Entry) -> Result<Node> {
        let e = match e.kind {
            EntryKind::Hardlink { .. } => ar.hardlink_target(&e)?,
            _ => e,
        };
        let kind = kind_of(&e.stat);
        let node = Node::PxarEntry {
            archive: a.clone(),
            offset: e.offset,
            kind,
            end: e.end(),
        };
        self.pxar_entries.insert((a.clone(), e.offset), Arc::new(e));
        Ok(node)
    }

    pub(super) fn pxar_list(&self, a: &PxarRef, dir: Option<At>) -> Result<Vec<(OsString, Node)>> {
        let (ar, d) = self.pxar_entry(a, dir)?;
        let mut out = Vec::new();
        for child in ar.list(&d)? {
            let name = OsString::from_vec(child.name.clone());
            out.push((name, self.pxar_child(a, &ar, child)?));
        }
        Ok(out)
    }

    pub(super) fn pxar_lookup(
        &self,
        a: &PxarRef,
        dir: Option<At>,
        name: &[u8],
    ) -> Result<Option<Node>> {
        let (ar, d) = self.pxar_entry(a, dir)?;
        match ar.lookup(&d, name)? {
            Some(child) => self.pxar_child(a, &ar, child).map(Some),
            None => Ok(None),
        }
    }

    /// Attributes: the entry's own mode (setuid and sticky bits included), owner, mtime
    /// with nanoseconds, size, device number. Every file shows one link: how many names
    /// a hardlinked file has is known only after reading the whole archive.
    pub(super) fn pxar_attr(&self, a: &PxarRef, at: Option<At>) -> Result<Attr> {
        let (_, e) = self.pxar_entry(a, at)?;
        let kind = kind_of(&e.stat);
        let (size, rdev) = match &e.kind {
            EntryKind::File { size, .. } => (*size, 0),
            EntryKind::Symlink { target } => (target.len() as u64, 0),
            EntryKind::Device { major, minor } => (0, encode_dev(*major, *minor)),
            _ => (0, 0),
        };
        Ok(Attr {
            ino: 0,
            kind,
            size,
            perm: e.stat.permissions() as u16,
            uid: e.stat.uid,
            gid: e.stat.gid,
            mtime: systime(e.stat.mtime_secs, e.stat.mtime_nanos as i64),
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            rdev,
        })
    }

    pub(super) fn pxar_readlink(&self, a: &PxarRef, at: At) -> Result<Vec<u8>> {
        let (_, e) = self.pxar_entry(a, Some(at))?;
        match &e.kind {
            EntryKind::Symlink { target } => Ok(target.clone()),
            _ => Err(Error::invalid(
                format!("{}/{} entry at offset {}", a.dir, a.file, at.0),
                "not a symbolic link",
            )),
        }
    }

    pub(super) fn pxar_open(&self, a: &PxarRef, at: At) -> Result<PxarHandle> {
        let lock = self.ds.locker().lock_snapshot_shared(&a.dir)?;
        let (ar, e) = self.pxar_entry(a, Some(at))?;
        let content = ar.content(&e)?;
        Ok(PxarHandle {
            archive: ar,
            content,
            _lock: lock,
        })
    }

    /// `size` bytes at `offset` (fewer only at the end of the file).
    pub(super) fn pxar_read(&self, h: &PxarHandle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let want = (size as u64).min(h.content.len().saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; want];
        let n = h.archive.read_content(&h.content, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Every extended attribute of an entry as `getfattr` sees it: its xattrs, its ACLs
    /// as `system.posix_acl_access` / `_default`, its capabilities as
    /// `security.capability`.
    pub(super) fn pxar_xattrs(
        &self,
        a: &PxarRef,
        at: Option<At>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (_, e) = self.pxar_entry(a, at)?;
        let mut out = e.xattrs.clone();
        if let Some(v) = acl::access_xattr(&e.stat, &e.acl) {
            out.push((b"system.posix_acl_access".to_vec(), v));
        }
        if let Some(v) = acl::default_xattr(&e.acl) {
            out.push((b"system.posix_acl_default".to_vec(), v));
        }
        if let Some(caps) = &e.fcaps {
            out.push((b"security.capability".to_vec(), caps.clone()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_encode_as_linux_does() {
        assert_eq!(encode_dev(1, 3), 0x103); // /dev/null
        assert_eq!(encode_dev(8, 0x123), 0x10_0823);
    }
}
