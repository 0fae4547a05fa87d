//! The pxar encoder: writes the single-stream layout exactly as pxar 1.0.0 writes it
//! (spec §7.1): v1, no FORMAT_VERSION and no PRELUDE; the root ENTRY at offset 0; per
//! entry its ENTRY, XATTR*, ACL_USER*, ACL_GROUP*, ACL_GROUP_OBJ?, ACL_DEFAULT?,
//! ACL_DEFAULT_USER*, ACL_DEFAULT_GROUP*, FCAPS?, QUOTA_PROJID?, then PAYLOAD, SYMLINK,
//! DEVICE, children + GOODBYE, or nothing (fifo, socket); a hardlink is FILENAME +
//! HARDLINK with no ENTRY. It streams into any `std::io::Write` and keeps only the
//! goodbye items of the open directories: never a file's content.

use std::io::Write;

use crate::pxar::format::{
    self, GoodbyeItem, Header, ACL_DEFAULT, ACL_DEFAULT_GROUP, ACL_DEFAULT_USER, ACL_GROUP,
    ACL_GROUP_OBJ, ACL_USER, DEVICE, ENTRY, FCAPS, FILENAME, GOODBYE, GOODBYE_ITEM_SIZE,
    GOODBYE_TAIL_MARKER, HARDLINK, HEADER_SIZE, MAX_FILENAME_SIZE, MAX_PATH_SIZE, MAX_XATTR_SIZE,
    PAYLOAD, QUOTA_PROJID, SYMLINK, XATTR,
};
use crate::util::error::{Error, IoContext, Result};

mod metadata;
pub use metadata::{Acl, AclDefault, AclGroup, AclUser, Metadata, Xattr, ACL_NO_MASK};

/// Where a file's FILENAME header is: what a later hardlink to it points back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOffset(pub u64);

/// An open directory: the goodbye items of its children (absolute FILENAME offsets
/// until the table is written) and the last name, to enforce the order.
struct Dir {
    entry_offset: u64,
    /// This directory's own FILENAME offset and name hash (none for the root).
    filename: Option<(u64, u64)>,
    items: Vec<GoodbyeItem>,
    last_name: Option<Vec<u8>>,
}

/// Writes one pxar stream. Entries of a directory must come sorted by name bytes.
pub struct Encoder<W: Write> {
    out: W,
    pos: u64,
    dirs: Vec<Dir>,
    /// Set when a file was left unfinished: the stream is no longer valid.
    broken: bool,
}

fn what() -> &'static str {
    "pxar stream"
}

/// Refuse an entry whose arguments do not fit its kind.
fn require(ok: bool, kind: &str, name: &[u8], why: &str) -> Result<()> {
    if ok {
        return Ok(());
    }
    Err(Error::invalid(
        format!("{kind} {:?}", String::from_utf8_lossy(name)),
        why,
    ))
}

impl<W: Write> Encoder<W> {
    /// Start a stream whose root directory has `root`'s metadata.
    pub fn new(out: W, root: &Metadata) -> Result<Encoder<W>> {
        if !root.stat.is_dir() {
            return Err(Error::invalid("pxar root entry", "not a directory"));
        }
        let mut e = Encoder {
            out,
            pos: 0,
            dirs: Vec::new(),
            broken: false,
        };
        // v1: the root ENTRY is the first item; the root's goodbye tail points back to
        // the stream start (position 0), which is this ENTRY.
        e.write_metadata(root)?;
        e.dirs.push(Dir {
            entry_offset: 0,
            filename: None,
            items: Vec::new(),
            last_name: None,
        });
        Ok(e)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Open directories, the root included.
    pub fn depth(&self) -> usize {
        self.dirs.len()
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).ctx(what())?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn item(&mut self, htype: u64, content: &[&[u8]]) -> Result<()> {
        let len: u64 = content.iter().map(|c| c.len() as u64).sum();
        self.raw(
            &Header {
                htype,
                full_size: HEADER_SIZE + len,
            }
            .to_bytes(),
        )?;
        for c in content {
            self.raw(c)?;
        }
        Ok(())
    }

    fn u64s(&mut self, htype: u64, v: &[u64]) -> Result<()> {
        let mut b = Vec::with_capacity(v.len() * 8);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        self.item(htype, &[&b])
    }

    fn write_metadata(&mut self, m: &Metadata) -> Result<()> {
        self.item(ENTRY, &[&m.stat.to_bytes()])?;
        for x in &m.xattrs {
            let size = (x.name.len() + 1 + x.value.len()) as u64;
            if x.name.is_empty() || x.name.len() > 255 || x.name.contains(&0) {
                return Err(Error::invalid(
                    format!("xattr {:?}", String::from_utf8_lossy(&x.name)),
                    "not a valid attribute name",
                ));
            }
            if size > MAX_XATTR_SIZE {
                return Err(Error::TooLarge {
                    what: format!("xattr {:?}", String::from_utf8_lossy(&x.name)),
                    size,
                    limit: MAX_XATTR_SIZE,
                });
            }
            self.item(XATTR, &[&x.name, &[0], &x.value])?;
        }
        let a = &m.acl;
        for u in &a.users {
            self.u64s(ACL_USER, &[u.uid, u.perms])?;
        }
        for g in &a.groups {
            self.u64s(ACL_GROUP, &[g.gid, g.perms])?;
        }
        if let Some(p) = a.group_obj {
            self.u64s(ACL_GROUP_OBJ, &[p])?;
        }
        if let Some(d) = a.default {
            self.u64s(ACL_DEFAULT, &[d.user_obj, d.group_obj, d.other, d.mask])?;
        }
        for u in &a.default_users {
            self.u64s(ACL_DEFAULT_USER, &[u.uid, u.perms])?;
        }
        for g in &a.default_groups {
            self.u64s(ACL_DEFAULT_GROUP, &[g.gid, g.perms])?;
        }
        if let Some(f) = &m.fcaps {
            self.item(FCAPS, &[f])?;
        }
        if let Some(p) = m.quota_project_id {
            self.u64s(QUOTA_PROJID, &[p])?;
        }
        Ok(())
    }

    /// Check the encoder state and the name, record it as the directory's last, and
    /// write its FILENAME. Returns the FILENAME offset.
    fn start_entry(&mut self, name: &[u8]) -> Result<u64> {
        if self.broken {
            return Err(Error::invalid(what(), "a file was left unfinished"));
        }
        let shown = || format!("file name {:?}", String::from_utf8_lossy(name));
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(Error::invalid(shown(), "not a single path component"));
        }
        if name.len() as u64 + 1 > MAX_FILENAME_SIZE {
            return Err(Error::invalid(shown(), "longer than 4096 bytes"));
        }
        let dir = self
            .dirs
            .last_mut()
            .ok_or_else(|| Error::invalid(what(), "finished"))?;
        if dir.last_name.as_deref().is_some_and(|last| last >= name) {
            return Err(Error::invalid(
                shown(),
                "not after the previous entry (a directory's entries go sorted by name bytes)",
            ));
        }
        dir.last_name = Some(name.to_vec());
        let at = self.pos;
        self.item(FILENAME, &[name, &[0]])?;
        Ok(at)
    }

    fn end_entry(&mut self, name: &[u8], at: u64) {
        let size = self.pos - at;
        let dir = self
            .dirs
            .last_mut()
            .expect("an entry is inside a directory");
        dir.items.push(GoodbyeItem {
            hash: format::hash(name),
            offset: at,
            size,
        });
    }

    /// Start a regular file of `size` bytes; its content follows through the writer.
    pub fn create_file(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        size: u64,
    ) -> Result<FileWriter<'_, W>> {
        let why = "metadata is not a regular file's";
        require(meta.stat.is_regular(), "file", name, why)?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        self.raw(
            &Header {
                htype: PAYLOAD,
                full_size: HEADER_SIZE + size,
            }
            .to_bytes(),
        )?;
        Ok(FileWriter {
            enc: self,
            name: name.to_vec(),
            at,
            remaining: size,
            done: false,
        })
    }

    /// A regular file whose content is in memory.
    pub fn add_file(&mut self, name: &[u8], meta: &Metadata, data: &[u8]) -> Result<LinkOffset> {
        let mut f = self.create_file(name, meta, data.len() as u64)?;
        f.write(data)?;
        f.finish()
    }

    pub fn add_symlink(&mut self, name: &[u8], meta: &Metadata, target: &[u8]) -> Result<()> {
        let ok = meta.stat.is_symlink() && !target.is_empty() && !target.contains(&0);
        require(
            ok,
            "symlink",
            name,
            "not a symlink's metadata, or a bad target",
        )?;
        let ok = (target.len() as u64) < MAX_PATH_SIZE;
        require(ok, "symlink", name, "target longer than 4095 bytes")?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        self.item(SYMLINK, &[target, &[0]])?;
        self.end_entry(name, at);
        Ok(())
    }

    pub fn add_device(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        major: u64,
        minor: u64,
    ) -> Result<()> {
        require(
            meta.stat.is_device(),
            "device",
            name,
            "metadata is not a device's",
        )?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        self.u64s(DEVICE, &[major, minor])?;
        self.end_entry(name, at);
        Ok(())
    }

    /// A FIFO or a socket: ENTRY and attributes, no content item.
    pub fn add_fifo_or_socket(&mut self, name: &[u8], meta: &Metadata) -> Result<()> {
        let why = "metadata is not a FIFO's or socket's";
        require(meta.stat.is_fifo_or_socket(), "entry", name, why)?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        self.end_entry(name, at);
        Ok(())
    }

    /// A second name of an earlier file: FILENAME + HARDLINK {distance back to the
    /// target's FILENAME, the target's path inside the archive (no leading `/`)}.
    pub fn add_hardlink(
        &mut self,
        name: &[u8],
        target_path: &[u8],
        target: LinkOffset,
    ) -> Result<()> {
        let ok = target.0 < self.pos && !target_path.is_empty() && !target_path.contains(&0);
        require(
            ok,
            "hardlink",
            name,
            "the target must be an earlier file with a path",
        )?;
        let at = self.start_entry(name)?;
        let back = (at - target.0).to_le_bytes();
        self.item(HARDLINK, &[&back, target_path, &[0]])?;
        self.end_entry(name, at);
        Ok(())
    }

    /// Open a subdirectory: its entries follow, then `finish_directory`.
    pub fn create_directory(&mut self, name: &[u8], meta: &Metadata) -> Result<()> {
        require(
            meta.stat.is_dir(),
            "directory",
            name,
            "metadata is not a directory's",
        )?;
        let at = self.start_entry(name)?;
        let entry_offset = self.pos;
        self.write_metadata(meta)?;
        self.dirs.push(Dir {
            entry_offset,
            filename: Some((at, format::hash(name))),
            items: Vec::new(),
            last_name: None,
        });
        Ok(())
    }

    /// Write the open directory's goodbye table: its children's items in the spec's
    /// Eytzinger order, then the tail pointing back to its ENTRY (the root's: to the
    /// stream start).
    fn write_goodbye(&mut self) -> Result<Dir> {
        let dir = self
            .dirs
            .pop()
            .ok_or_else(|| Error::invalid(what(), "finished"))?;
        let at = self.pos;
        let items: Vec<GoodbyeItem> = dir
            .items
            .iter()
            .map(|it| GoodbyeItem {
                offset: at - it.offset,
                ..*it
            })
            .collect();
        let size = HEADER_SIZE + (items.len() as u64 + 1) * GOODBYE_ITEM_SIZE;
        let mut b = Vec::with_capacity(size as usize);
        b.extend_from_slice(
            &Header {
                htype: GOODBYE,
                full_size: size,
            }
            .to_bytes(),
        );
        for it in format::goodbye_table(items) {
            b.extend_from_slice(&it.to_bytes());
        }
        let tail = GoodbyeItem {
            hash: GOODBYE_TAIL_MARKER,
            offset: at - dir.entry_offset,
            size,
        };
        b.extend_from_slice(&tail.to_bytes());
        self.raw(&b)?;
        Ok(dir)
    }

    /// Close the directory opened last.
    pub fn finish_directory(&mut self) -> Result<()> {
        if self.dirs.len() < 2 {
            return Err(Error::invalid(what(), "no subdirectory is open"));
        }
        if self.broken {
            return Err(Error::invalid(what(), "a file was left unfinished"));
        }
        let dir = self.write_goodbye()?;
        let (at, hash) = dir.filename.expect("subdirectories have a name");
        let size = self.pos - at;
        let parent = self.dirs.last_mut().expect("checked: a parent is open");
        parent.items.push(GoodbyeItem {
            hash,
            offset: at,
            size,
        });
        Ok(())
    }

    /// Close the root directory and hand back the output, flushed.
    pub fn finish(mut self) -> Result<W> {
        if self.dirs.len() != 1 {
            return Err(Error::invalid(
                what(),
                format!("{} directories still open", self.dirs.len() - 1),
            ));
        }
        if self.broken {
            return Err(Error::invalid(what(), "a file was left unfinished"));
        }
        self.write_goodbye()?;
        self.out.flush().ctx(what())?;
        Ok(self.out)
    }
}

/// The content of a file started with `create_file`: exactly the announced number of
/// bytes, then `finish`.
pub struct FileWriter<'a, W: Write> {
    enc: &'a mut Encoder<W>,
    name: Vec<u8>,
    at: u64,
    remaining: u64,
    done: bool,
}

impl<W: Write> FileWriter<'_, W> {
    /// Bytes still owed.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.remaining {
            return Err(Error::invalid(
                format!("file {:?}", String::from_utf8_lossy(&self.name)),
                "more content than its announced size",
            ));
        }
        self.enc.raw(data)?;
        self.remaining -= data.len() as u64;
        Ok(())
    }

    /// Complete the file; its offset is what hardlinks to it point back to.
    pub fn finish(mut self) -> Result<LinkOffset> {
        if self.remaining != 0 {
            return Err(Error::invalid(
                format!("file {:?}", String::from_utf8_lossy(&self.name)),
                format!("{} bytes short of its announced size", self.remaining),
            ));
        }
        self.done = true;
        let (name, at) = (std::mem::take(&mut self.name), self.at);
        self.enc.end_entry(&name, at);
        Ok(LinkOffset(at))
    }
}

impl<W: Write> Drop for FileWriter<'_, W> {
    fn drop(&mut self) {
        if !self.done {
            self.enc.broken = true;
        }
    }
}

#[cfg(test)]
mod tests;
