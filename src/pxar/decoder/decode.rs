//! Decoding one entry: FILENAME, ENTRY (or HARDLINK), attributes in the format's order,
//! then the content item its file type requires. Every size is checked against the
//! format's caps and the range the entry must lie in before anything is allocated.

use crate::pxar::format::*;
use crate::util::error::Result;
use crate::util::ReadAt;

use super::entry::{bad_name, AclDefault, AclGroup, AclUser, Entry, EntryKind, Payload};
use super::stream::{u64_at, Cursor};
use super::Archive;

/// Decoded attributes of one entry may hold at most this many bytes (xattrs, ACLs,
/// fcaps). The format caps each item, not their number; this bounds what one entry
/// allocates (Linux keeps far less per inode).
pub const MAX_ENTRY_ATTRS: u64 = 8 << 20;

/// The bytes before the one closing NUL of `c`, which must be non-empty and NUL-free.
fn c_string(c: &[u8]) -> Option<Vec<u8>> {
    match c.split_last() {
        Some((0, s)) if !s.is_empty() && !s.contains(&0) => Some(s.to_vec()),
        _ => None,
    }
}

/// Attribute items in the order the format writes them; `true` for those that may
/// appear more than once.
fn attr_rank(htype: u64) -> Option<(u8, bool)> {
    Some(match htype {
        XATTR => (0, true),
        ACL_USER => (1, true),
        ACL_GROUP => (2, true),
        ACL_GROUP_OBJ => (3, false),
        ACL_DEFAULT => (4, false),
        ACL_DEFAULT_USER => (5, true),
        ACL_DEFAULT_GROUP => (6, true),
        FCAPS => (7, false),
        QUOTA_PROJID => (8, false),
        _ => return None,
    })
}

impl<R: ReadAt> Archive<R> {
    /// The entry whose FILENAME is at `pos`, inside `[pos, limit)`. `dir_size` is its
    /// goodbye item's size (required of a directory: its table is found from its end);
    /// `None` decodes a hardlink target, which may be neither a directory nor a hardlink.
    pub(super) fn decode_child(
        &self,
        pos: u64,
        limit: u64,
        dir_size: Option<u64>,
    ) -> Result<Entry> {
        self.decode_child_in(&mut Cursor::new(self, limit), pos, limit, dir_size)
    }

    /// `decode_child` through `cur`, whose window may already hold the bytes (siblings
    /// decoded in stream order share one).
    pub(super) fn decode_child_in(
        &self,
        cur: &mut Cursor<'_, R>,
        pos: u64,
        limit: u64,
        dir_size: Option<u64>,
    ) -> Result<Entry> {
        cur.limit = limit.min(self.size);
        let h = cur.header(pos)?;
        if h.htype != FILENAME {
            return Err(self.bad(
                pos,
                format!("expected a FILENAME, found item type {:016x}", h.htype),
            ));
        }
        let raw = cur.content(pos, h, MAX_FILENAME_SIZE, "FILENAME")?;
        let name = match raw.split_last() {
            Some((0, n)) => n.to_vec(),
            _ => return Err(self.bad(pos, "a FILENAME without its closing NUL")),
        };
        if let Some(why) = bad_name(&name) {
            // The name itself, escaped: a crafted archive is told by what it holds.
            let shown = String::from_utf8_lossy(&name);
            return Err(self.bad(pos, format!("{why}: {shown:?}")));
        }
        let p = pos + h.full_size;
        let h = cur.header(p)?;
        let mut e = Entry::empty(pos, name);
        if h.htype == HARDLINK {
            if dir_size.is_none() {
                return Err(self.bad(pos, "a hardlink points to this entry, itself a hardlink"));
            }
            let c = cur.content(p, h, 8 + MAX_PATH_SIZE + 1, "HARDLINK")?;
            let path = (c.len() > 8).then(|| c_string(&c[8..])).flatten();
            let Some(target_path) = path else {
                return Err(self.bad(p, "a HARDLINK without an offset and a NUL-ended path"));
            };
            let dist = u64_at(&c, 0);
            // Strictly backward and after the root ENTRY: no cycle, nothing outside.
            let target = pos
                .checked_sub(dist)
                .filter(|t| dist > 0 && *t > self.root_pos);
            let Some(target_offset) = target else {
                return Err(self.bad(
                    p,
                    format!("a hardlink pointing {dist} bytes back from {pos}: forward or outside the archive"),
                ));
            };
            e.kind = EntryKind::Hardlink {
                target_offset,
                target_path,
            };
            e.end = p + h.full_size;
            return Ok(e);
        }
        self.decode_body(cur, p, h, &mut e, dir_size.map(|s| (pos, s)), false)?;
        Ok(e)
    }

    /// The root ENTRY at `pos`; the root directory ends at the end of the stream.
    pub(super) fn decode_root(&self, pos: u64) -> Result<Entry> {
        let mut cur = Cursor::new(self, self.size);
        let h = cur.header(pos)?;
        let mut e = Entry::empty(pos, Vec::new());
        self.decode_body(&mut cur, pos, h, &mut e, Some((0, self.size)), true)?;
        if !e.is_dir() {
            return Err(self.bad(pos, "the root entry is not a directory"));
        }
        Ok(e)
    }

    /// ENTRY `h` at `p`, then attributes and content, into `e`. `dir` is `(start, size)`
    /// of the range a directory spans (from its parent's goodbye item, or the stream).
    fn decode_body(
        &self,
        cur: &mut Cursor<'_, R>,
        p: u64,
        h: Header,
        e: &mut Entry,
        dir: Option<(u64, u64)>,
        root: bool,
    ) -> Result<()> {
        let v1 = match h.htype {
            ENTRY => false,
            ENTRY_V1 => true,
            t => {
                return Err(self.bad(p, format!("expected an ENTRY, found item type {t:016x}")));
            }
        };
        let mut b = [0u8; ENTRY_SIZE as usize];
        let len = if v1 { ENTRY_V1_SIZE } else { ENTRY_SIZE };
        if h.full_size != HEADER_SIZE + len {
            return Err(self.bad(p, format!("an ENTRY of {} bytes", h.full_size)));
        }
        cur.read(p + HEADER_SIZE, &mut b[..len as usize])?;
        e.stat = Stat::parse(&b[..len as usize], v1)
            .ok_or_else(|| self.bad(p, "ENTRY mtime nanoseconds out of range"))?;
        if e.stat.is_dir() {
            // A directory spans exactly the size its goodbye item gives.
            let Some((start, size)) = dir else {
                return Err(self.bad(p, "a hardlink points to this directory"));
            };
            match start.checked_add(size).filter(|end| *end <= cur.limit) {
                Some(end) => cur.limit = end,
                None => {
                    return Err(self.bad(
                        e.offset,
                        format!(
                            "a directory of {size} bytes runs past its parent's end at {}",
                            cur.limit
                        ),
                    ))
                }
            }
        }
        let (q, next) = self.attributes(cur, p + h.full_size, e)?;
        let ft = e.stat.file_type();
        let what = |t: u64| match t {
            S_IFDIR => "a directory",
            S_IFREG => "a regular file",
            S_IFLNK => "a symlink",
            _ => "a device",
        };
        let Some(n) = next.filter(|n| !matches!(n.htype, FILENAME | GOODBYE)) else {
            // Fifos, sockets and directories are followed by a FILENAME or a GOODBYE
            // (a fifo or socket at its parent's end: by nothing within its range).
            match ft {
                S_IFIFO | S_IFSOCK => {
                    e.kind = if ft == S_IFIFO {
                        EntryKind::Fifo
                    } else {
                        EntryKind::Socket
                    };
                    e.end = q;
                }
                S_IFDIR if next.is_some() => {
                    let end = cur.limit;
                    let goodbye_first = next.is_some_and(|n| n.htype == GOODBYE);
                    let d = self.dir_table(p, q, end, root, goodbye_first)?;
                    e.kind = EntryKind::Directory(d);
                    e.end = end;
                }
                S_IFREG | S_IFLNK | S_IFBLK | S_IFCHR | S_IFDIR => {
                    return Err(self.bad(q, format!("{} without its content item", what(ft))));
                }
                _ => {
                    return Err(self.bad(p, format!("unknown file type in mode {:o}", e.stat.mode)))
                }
            }
            return Ok(());
        };
        e.end = q + n.full_size;
        match (ft, n.htype) {
            (S_IFREG, PAYLOAD) => {
                e.kind = EntryKind::File {
                    size: n.full_size - HEADER_SIZE,
                    payload: Payload {
                        is_ref: false,
                        offset: q + HEADER_SIZE,
                    },
                };
            }
            (S_IFREG, PAYLOAD_REF) => {
                if self.version < 2 {
                    return Err(self.bad(q, "a PAYLOAD_REF in a v1 archive"));
                }
                let c = cur.fixed::<16>(q, n, "PAYLOAD_REF")?;
                let (offset, size) = (u64_at(&c, 0), u64_at(&c, 8));
                if offset
                    .checked_add(HEADER_SIZE)
                    .and_then(|o| o.checked_add(size))
                    .is_none()
                {
                    return Err(self.bad(q, "a PAYLOAD_REF past any stream's end"));
                }
                e.kind = EntryKind::File {
                    size,
                    payload: Payload {
                        is_ref: true,
                        offset,
                    },
                };
            }
            (S_IFLNK, SYMLINK) => {
                let c = cur.content(q, n, MAX_PATH_SIZE + 1, "SYMLINK")?;
                let target = c_string(&c).ok_or_else(|| {
                    self.bad(q, "a SYMLINK target empty, with a NUL, or not NUL-ended")
                })?;
                e.kind = EntryKind::Symlink { target };
            }
            (S_IFBLK | S_IFCHR, DEVICE) => {
                let c = cur.fixed::<16>(q, n, "DEVICE")?;
                e.kind = EntryKind::Device {
                    major: u64_at(&c, 0),
                    minor: u64_at(&c, 8),
                };
            }
            (S_IFREG | S_IFLNK | S_IFBLK | S_IFCHR | S_IFDIR | S_IFIFO | S_IFSOCK, t) => {
                return Err(self.bad(
                    q,
                    format!(
                        "unexpected item type {t:016x} in {}",
                        match ft {
                            S_IFIFO => "a fifo",
                            S_IFSOCK => "a socket",
                            _ => what(ft),
                        }
                    ),
                ));
            }
            _ => return Err(self.bad(p, format!("unknown file type in mode {:o}", e.stat.mode))),
        }
        Ok(())
    }

    /// The attribute items from `q` in the format's order, into `e`; returns where they
    /// end and the header found there (`None` at the end of the range).
    fn attributes(
        &self,
        cur: &mut Cursor<'_, R>,
        mut q: u64,
        e: &mut Entry,
    ) -> Result<(u64, Option<Header>)> {
        let mut last: Option<(u8, bool)> = None;
        let mut total = 0u64;
        while q < cur.limit {
            let h = cur.header(q)?;
            let Some(rank) = attr_rank(h.htype) else {
                return Ok((q, Some(h)));
            };
            if let Some((r, many)) = last {
                if rank.0 < r || (rank.0 == r && !many) {
                    return Err(self.bad(
                        q,
                        format!("attribute item {:016x} out of order or repeated", h.htype),
                    ));
                }
            }
            last = Some(rank);
            total += h.full_size;
            if total > MAX_ENTRY_ATTRS {
                return Err(self.bad(
                    q,
                    format!("attributes of more than {MAX_ENTRY_ATTRS} bytes"),
                ));
            }
            let u = |c: &[u8], i: usize| u64_at(c, 8 * i);
            match h.htype {
                XATTR => {
                    let c = cur.content(q, h, MAX_XATTR_SIZE, "XATTR")?;
                    let nul = c
                        .iter()
                        .position(|b| *b == 0)
                        .filter(|n| (1..=255).contains(n));
                    let Some(nul) = nul else {
                        return Err(
                            self.bad(q, "an XATTR without a name of 1 to 255 bytes and its NUL")
                        );
                    };
                    e.xattrs.push((c[..nul].to_vec(), c[nul + 1..].to_vec()));
                }
                ACL_USER | ACL_DEFAULT_USER => {
                    let c = cur.fixed::<16>(q, h, "ACL_USER")?;
                    let a = AclUser {
                        uid: u(&c, 0),
                        perms: u(&c, 1),
                    };
                    match h.htype {
                        ACL_USER => e.acl.users.push(a),
                        _ => e.acl.default_users.push(a),
                    }
                }
                ACL_GROUP | ACL_DEFAULT_GROUP => {
                    let c = cur.fixed::<16>(q, h, "ACL_GROUP")?;
                    let a = AclGroup {
                        gid: u(&c, 0),
                        perms: u(&c, 1),
                    };
                    match h.htype {
                        ACL_GROUP => e.acl.groups.push(a),
                        _ => e.acl.default_groups.push(a),
                    }
                }
                ACL_GROUP_OBJ => {
                    e.acl.group_obj = Some(u(&cur.fixed::<8>(q, h, "ACL_GROUP_OBJ")?, 0));
                }
                ACL_DEFAULT => {
                    let c = cur.fixed::<32>(q, h, "ACL_DEFAULT")?;
                    e.acl.default = Some(AclDefault {
                        user_obj: u(&c, 0),
                        group_obj: u(&c, 1),
                        other: u(&c, 2),
                        mask: u(&c, 3),
                    });
                }
                FCAPS => e.fcaps = Some(cur.content(q, h, MAX_XATTR_SIZE, "FCAPS")?),
                _ => e.quota_projid = Some(u(&cur.fixed::<8>(q, h, "QUOTA_PROJID")?, 0)),
            }
            q += h.full_size;
        }
        Ok((q, None))
    }
}
