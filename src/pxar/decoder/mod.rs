//! The pxar decoder (spec §7.1): random access to an archive through `util::ReadAt`,
//! decoding only what is asked for. `Archive::open` reads the FORMAT_VERSION, PRELUDE
//! and root ENTRY; a directory is listed or searched through its goodbye table (found
//! from its end), a file read from its PAYLOAD or, in split archives, from the payload
//! stream its PAYLOAD_REF points into.
//!
//! Robustness: nothing is decoded whole, no allocation exceeds the format's caps (or
//! `MAX_ENTRY_ATTRS`, `MAX_PRELUDE`), every size is checked against its parent's range
//! and the stream before use. Children lie strictly inside their parent and hardlinks
//! point strictly backward, so no walk can cycle. Bad input is
//! `Error::Corrupt { what: "ARCHIVE at offset N", why: CorruptKind::Format(..) }` (EIO in
//! the mount, exit 2 in the CLI); errors of the underlying reader keep their kind, with
//! the archive and offset added as context.

mod decode;
mod entry;
mod goodbye;
mod stream;

#[cfg(test)]
mod tests;

pub use decode::MAX_ENTRY_ATTRS;
pub use entry::{bad_name, Acl, AclDefault, AclGroup, AclUser, Dir, Entry, EntryKind, Payload};

use crate::pxar::format::*;
use crate::util::error::{Error, Result};
use crate::util::ReadAt;

use stream::u64_at;

/// A PRELUDE (JSON exclude patterns) may hold at most this many bytes: the format sets
/// no cap, this decoder does, before allocating.
pub const MAX_PRELUDE: u64 = 1 << 20;

/// An open archive: the metadata stream, the payload stream of a split archive, and the
/// name errors give it. Every method takes `&self`: share it between threads when `R` is
/// `Sync`.
pub struct Archive<R: ReadAt> {
    meta: R,
    payload: Option<R>,
    what: String,
    size: u64,
    version: u8,
    prelude: Option<Vec<u8>>,
    root_pos: u64,
    root: Entry,
    /// The goodbye hash of a name: `format::hash`; tests swap in one with collisions.
    hasher: fn(&[u8]) -> u64,
}

impl<R: ReadAt> std::fmt::Debug for Archive<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("what", &self.what)
            .field("version", &self.version)
            .field("size", &self.size)
            .field("split", &self.payload.is_some())
            .finish()
    }
}

/// A regular file's bytes, located and checked once (`Archive::content`), for reads
/// that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    in_payload: bool,
    start: u64,
    len: u64,
}

impl Content {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: ReadAt> Archive<R> {
    /// Open an archive: `meta` is the single stream (v1) or the metadata stream of a
    /// split pair (v2), `payload` the split pair's payload stream (needed only to read
    /// files). `what` names the archive in errors.
    pub fn open(meta: R, payload: Option<R>, what: impl Into<String>) -> Result<Self> {
        let size = meta.size();
        let mut ar = Archive {
            meta,
            payload,
            what: what.into(),
            size,
            version: 1,
            prelude: None,
            root_pos: 0,
            root: Entry::empty(0, Vec::new()),
            hasher: hash,
        };
        let (version, prelude, pos) = {
            let mut cur = stream::Cursor::new(&ar, size);
            let h = cur.header(0)?;
            if h.htype == FORMAT_VERSION {
                let v = u64_at(&cur.fixed::<8>(0, h, "FORMAT_VERSION")?, 0);
                if v != 2 {
                    return Err(ar.bad(0, format!("unsupported format version {v}")));
                }
                let pos = h.full_size;
                let h = cur.header(pos)?;
                if h.htype == PRELUDE {
                    let prelude = cur.content(pos, h, MAX_PRELUDE, "PRELUDE")?;
                    (2, Some(prelude), pos + h.full_size)
                } else {
                    (2, None, pos)
                }
            } else if h.htype == PRELUDE {
                return Err(ar.bad(0, "a PRELUDE in a v1 archive (no FORMAT_VERSION)"));
            } else {
                (1, None, 0)
            }
        };
        ar.version = version;
        ar.prelude = prelude;
        ar.root_pos = pos;
        ar.root = ar.decode_root(pos)?;
        Ok(ar)
    }

    /// The name errors give the archive.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// 1 (no FORMAT_VERSION) or 2.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The PRELUDE's content (v2 only), when the archive has one.
    pub fn prelude(&self) -> Option<&[u8]> {
        self.prelude.as_deref()
    }

    /// The root directory (decoded at open).
    pub fn root(&self) -> Result<Entry> {
        Ok(self.root.clone())
    }

    fn dir_of<'e>(&self, dir: &'e Entry) -> Result<&'e Dir> {
        dir.dir().ok_or_else(|| Error::NotADirectory {
            what: self.entry_name(dir),
        })
    }

    fn entry_name(&self, e: &Entry) -> String {
        format!(
            "{}: entry at offset {} ({})",
            self.what,
            e.offset,
            String::from_utf8_lossy(&e.name)
        )
    }

    /// Decode again an entry this archive handed out, from its `offset` and `end()`
    /// alone (what the mount keeps per inode instead of the entry). It is checked as when
    /// first decoded, except for lying inside its parent, which is not known here; a
    /// pair that names no entry is refused.
    pub fn entry_at(&self, offset: u64, end: u64) -> Result<Entry> {
        if offset == self.root.offset && end == self.root.end {
            return Ok(self.root.clone());
        }
        let refused = || {
            Error::invalid(
                format!("{} at offset {offset}", self.what),
                format!("no entry of this archive ends at {end}"),
            )
        };
        if end <= offset || end > self.size {
            return Err(refused());
        }
        let e = self.decode_child(offset, end, Some(end - offset))?;
        if e.end != end {
            return Err(refused());
        }
        Ok(e)
    }

    /// The children of `dir`, sorted by name, decoded from its goodbye table and checked
    /// whole (see `goodbye.rs`). Only this directory is read, not its subdirectories.
    pub fn list(&self, dir: &Entry) -> Result<Vec<Entry>> {
        self.children(self.dir_of(dir)?)
    }

    /// The child `name` of `dir`, by binary search of its goodbye table (O(log n) reads,
    /// hash collisions handled). A name no entry can have (`/`, `.`, `..`, empty) is
    /// `None`.
    pub fn lookup(&self, dir: &Entry, name: &[u8]) -> Result<Option<Entry>> {
        let d = self.dir_of(dir)?;
        if bad_name(name).is_some() {
            return Ok(None);
        }
        self.find(d, name)
    }

    /// The entry at `path` (`/`-separated, relative to the root; empty and `.`
    /// components skipped, `..` refused). Symlinks are not followed; a path through a
    /// non-directory is `None`.
    pub fn lookup_path(&self, path: &[u8]) -> Result<Option<Entry>> {
        let mut cur = self.root.clone();
        for comp in path.split(|b| *b == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            if comp == b".." {
                return Err(Error::invalid(
                    format!("{}: path {}", self.what, String::from_utf8_lossy(path)),
                    "'..' is not allowed in a path inside an archive",
                ));
            }
            if !cur.is_dir() {
                return Ok(None);
            }
            match self.lookup(&cur, comp)? {
                Some(e) => cur = e,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The entry a hardlink points to: a FILENAME strictly before the link, neither a
    /// directory nor another hardlink.
    pub fn hardlink_target(&self, link: &Entry) -> Result<Entry> {
        let EntryKind::Hardlink { target_offset, .. } = link.kind else {
            return Err(Error::invalid(self.entry_name(link), "not a hardlink"));
        };
        self.decode_child(target_offset, link.offset, None)
            .map_err(|e| e.context(format!("hardlink at offset {}", link.offset)))
    }

    /// Locate and check the bytes of a regular file (a hardlink: of its target). A
    /// payload reference must lie inside the payload stream, at a PAYLOAD header of the
    /// referenced size.
    pub fn content(&self, file: &Entry) -> Result<Content> {
        let target;
        let file = match file.kind {
            EntryKind::Hardlink { .. } => {
                target = self.hardlink_target(file)?;
                &target
            }
            _ => file,
        };
        let (size, payload) = match &file.kind {
            EntryKind::File { size, payload } => (*size, *payload),
            EntryKind::Directory(_) => {
                return Err(Error::IsADirectory {
                    what: self.entry_name(file),
                })
            }
            _ => return Err(Error::invalid(self.entry_name(file), "not a regular file")),
        };
        if !payload.is_ref() {
            return Ok(Content {
                in_payload: false,
                start: payload.offset(),
                len: size,
            });
        }
        let Some(p) = &self.payload else {
            return Err(Error::invalid(
                self.entry_name(file),
                "a payload reference, and the archive was opened without its payload stream",
            ));
        };
        let off = payload.offset();
        let bad = |why: String| {
            self.bad(
                file.offset,
                format!("its PAYLOAD_REF to payload stream offset {off}: {why}"),
            )
        };
        let end = off
            .checked_add(HEADER_SIZE)
            .and_then(|o| o.checked_add(size));
        if end.is_none_or(|end| end > p.size()) {
            return Err(bad(format!(
                "{size} bytes run past the payload stream's end at {}",
                p.size()
            )));
        }
        let mut b = [0u8; 16];
        self.read_exact_in(p, true, off, &mut b)?;
        let h = Header::parse(&b);
        if h.htype != PAYLOAD {
            return Err(bad(format!(
                "no PAYLOAD header there (type {:016x})",
                h.htype
            )));
        }
        if h.content_size() != Some(size) {
            return Err(bad(format!(
                "a PAYLOAD of {} bytes where {size} are referenced",
                h.full_size.saturating_sub(HEADER_SIZE)
            )));
        }
        Ok(Content {
            in_payload: true,
            start: off + HEADER_SIZE,
            len: size,
        })
    }

    /// Read located content from `offset`: fewer bytes than `buf` only at its end.
    pub fn read_content(&self, c: &Content, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= c.len {
            return Ok(0);
        }
        let n = (c.len - offset).min(buf.len() as u64) as usize;
        let r = match (&self.payload, c.in_payload) {
            (Some(p), true) => p,
            _ => &self.meta,
        };
        self.read_exact_in(r, c.in_payload, c.start + offset, &mut buf[..n])?;
        Ok(n)
    }

    /// Read a regular file (or a hardlink's target) from `offset`: `content` +
    /// `read_content`. Callers reading a file piece by piece keep the `Content`.
    pub fn read(&self, file: &Entry, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let c = self.content(file)?;
        self.read_content(&c, offset, buf)
    }
}
