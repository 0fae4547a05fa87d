//! One archive entry as the decoder hands it out: `Entry`, `EntryKind`, the layouts of a
//! directory (`Dir`) and a file's bytes (`Payload`), ACL records, and the file-name rule.
//! Decoding lives in `decode.rs`.

pub use crate::pxar::acl::{Acl, AclDefault, AclGroup, AclUser};
use crate::pxar::format::Stat;

/// A decoded entry. `offset` is its stable identity: the stream offset of its FILENAME
/// header (the root: of its ENTRY). Only the decoder makes entries (a private field), so
/// the positions inside `EntryKind` are the ones it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    /// The file name (no NUL); empty for the root.
    pub name: Vec<u8>,
    /// Mode, owner, mtime. A hardlink has no ENTRY of its own: `Stat::default()` here,
    /// see `Archive::hardlink_target`.
    pub stat: Stat,
    pub kind: EntryKind,
    /// `(name, value)` in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub acl: Acl,
    pub fcaps: Option<Vec<u8>>,
    pub quota_projid: Option<u64>,
    /// Where its metadata ends in the stream (a directory: after its goodbye table).
    pub(super) end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory(Dir),
    /// A regular file of `size` bytes; read it with `Archive::read`.
    File {
        size: u64,
        payload: Payload,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// `target_offset` is the absolute stream offset of the target's FILENAME (its
    /// `Entry::offset`), always before this entry.
    Hardlink {
        target_offset: u64,
        target_path: Vec<u8>,
    },
    /// A block or character device (`stat` says which).
    Device {
        major: u64,
        minor: u64,
    },
    Fifo,
    Socket,
}

/// Where a directory's parts lie in the stream (checked when decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dir {
    pub(super) entry: u64,
    pub(super) children: u64,
    pub(super) goodbye: u64,
    pub(super) end: u64,
    pub(super) count: u64,
}

impl Dir {
    /// The number of children (the goodbye table's items without its tail).
    pub fn child_count(&self) -> u64 {
        self.count
    }

    /// The stream offset of the GOODBYE header.
    pub fn goodbye_offset(&self) -> u64 {
        self.goodbye
    }
}

/// Where a regular file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub(super) is_ref: bool,
    pub(super) offset: u64,
}

impl Payload {
    /// A PAYLOAD_REF into the payload stream (split archives), not inline bytes.
    pub fn is_ref(&self) -> bool {
        self.is_ref
    }

    /// A reference: the offset of its PAYLOAD header in the payload stream. Inline: the
    /// offset of the first content byte in the metadata stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Entry {
    pub(super) fn empty(offset: u64, name: Vec<u8>) -> Entry {
        Entry {
            offset,
            name,
            stat: Stat::default(),
            kind: EntryKind::Fifo,
            xattrs: Vec::new(),
            acl: Acl::default(),
            fcaps: None,
            quota_projid: None,
            end: offset,
        }
    }

    /// Where the entry's metadata ends in the stream (a directory: after its goodbye
    /// table). With `offset`, what `Archive::entry_at` needs to decode it again.
    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Directory(_))
    }

    /// The directory's layout, when it is one.
    pub fn dir(&self) -> Option<&Dir> {
        match &self.kind {
            EntryKind::Directory(d) => Some(d),
            _ => None,
        }
    }
}

/// Why `name` cannot be a file name in a directory, if it cannot.
pub fn bad_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("an empty file name")
    } else if name.contains(&b'/') {
        Some("a file name containing '/'")
    } else if name == b"." || name == b".." {
        Some("a file name '.' or '..'")
    } else if name.contains(&0) {
        Some("a file name containing NUL")
    } else {
        None
    }
}
