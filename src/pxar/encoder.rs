//! The pxar encoder: writes the single-stream layout exactly as pxar 1.0.0 writes it
//! (spec §7.1): v1, no FORMAT_VERSION and no PRELUDE; the root ENTRY at offset 0; per
//! entry its ENTRY, XATTR*, ACL_USER*, ACL_GROUP*, ACL_GROUP_OBJ?, ACL_DEFAULT?,
//! ACL_DEFAULT_USER*, ACL_DEFAULT_GROUP*, FCAPS?, QUOTA_PROJID?, then PAYLOAD, SYMLINK,
//! DEVICE, children + GOODBYE, or nothing (fifo, socket); a hardlink is FILENAME +
//! HARDLINK with no ENTRY. It streams into any `std::io::Write` and keeps only the
//! goodbye items of the open directories: never a file's content.
//! Split mode (`new_split`, spec §7.1 "Split archives") writes the v2 pair as pxar 1.0.0
//! does: the metadata stream opens with FORMAT_VERSION 2 (and a PRELUDE when given), a
//! regular file carries PAYLOAD_REF {offset of its PAYLOAD header in the payload stream,
//! size}; the payload stream is a start marker, PAYLOAD header + bytes per file, and a
//! tail marker.

use std::io::Write;

use crate::pxar::format::{
    self, GoodbyeItem, Header, DEVICE, FILENAME, FORMAT_VERSION, GOODBYE, GOODBYE_ITEM_SIZE,
    GOODBYE_TAIL_MARKER, HARDLINK, HEADER_SIZE, MAX_FILENAME_SIZE, MAX_PATH_SIZE, PAYLOAD,
    PAYLOAD_REF, PAYLOAD_START_MARKER, PAYLOAD_TAIL_MARKER, PRELUDE, SYMLINK,
};
use crate::util::error::{Error, IoContext, Result};

mod file;
mod metadata;
pub use file::FileWriter;
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

/// The payload stream of a split archive and its write position.
struct Payload<P> {
    out: P,
    pos: u64,
    /// Where the last reference ends: references go forward through the stream (pxar's
    /// sequential decoder reads them in metadata order and cannot seek back).
    refs_end: u64,
    /// The stream already ends with a tail marker: the last injected chunk brought the
    /// previous stream's, and nothing was written after it.
    tail_present: bool,
}

/// Writes one pxar stream (or, split, a metadata and a payload stream). Entries of a
/// directory must come sorted by name bytes.
pub struct Encoder<W: Write, P: Write = std::io::Sink> {
    out: W,
    pos: u64,
    /// Split mode: where file contents go.
    payload: Option<Payload<P>>,
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
    /// Start a single (v1) stream whose root directory has `root`'s metadata.
    pub fn new(out: W, root: &Metadata) -> Result<Encoder<W>> {
        Encoder::start(out, None, root, None)
    }
}

impl<W: Write, P: Write> Encoder<W, P> {
    /// Start a split archive: metadata into `out`, file contents into `payload`;
    /// `prelude` (the PBS client's JSON) right after the FORMAT_VERSION.
    pub fn new_split(
        out: W,
        payload: P,
        root: &Metadata,
        prelude: Option<&[u8]>,
    ) -> Result<Encoder<W, P>> {
        let payload = Payload {
            out: payload,
            pos: 0,
            refs_end: 0,
            tail_present: false,
        };
        Encoder::start(out, Some(payload), root, prelude)
    }

    fn start(
        out: W,
        payload: Option<Payload<P>>,
        root: &Metadata,
        prelude: Option<&[u8]>,
    ) -> Result<Encoder<W, P>> {
        if !root.stat.is_dir() {
            return Err(Error::invalid("pxar root entry", "not a directory"));
        }
        let split = payload.is_some();
        let mut e = Encoder {
            out,
            pos: 0,
            payload,
            dirs: Vec::new(),
            broken: false,
        };
        if split {
            // v2: FORMAT_VERSION 2, the PRELUDE, then the root ENTRY; the payload
            // stream opens with its start marker (a bare header).
            e.u64s(FORMAT_VERSION, &[2])?;
            if let Some(p) = prelude {
                e.item(PRELUDE, &[p])?;
            }
            e.payload_raw(
                &Header {
                    htype: PAYLOAD_START_MARKER,
                    full_size: HEADER_SIZE,
                }
                .to_bytes(),
            )?;
        } else if prelude.is_some() {
            return Err(Error::invalid(
                what(),
                "a PRELUDE needs a split (v2) archive",
            ));
        }
        // The root's goodbye tail points back to the stream start (position 0): the
        // root ENTRY in v1, the FORMAT_VERSION in v2 (as pxar 1.0.0 writes it).
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

    /// Payload bytes written so far (split mode), else `None`.
    pub fn payload_position(&self) -> Option<u64> {
        self.payload.as_ref().map(|p| p.pos)
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

    /// Bytes of the payload stream (split), else of the one stream.
    fn payload_raw(&mut self, b: &[u8]) -> Result<()> {
        match &mut self.payload {
            Some(p) => {
                p.out.write_all(b).ctx("pxar payload stream")?;
                p.pos += b.len() as u64;
                p.tail_present = false;
                Ok(())
            }
            None => self.raw(b),
        }
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

    /// Record the entry started at `at`; `extra` is content written elsewhere (the
    /// payload of a split archive's file, which its goodbye size counts).
    fn end_entry(&mut self, name: &[u8], at: u64, extra: u64) {
        let size = self.pos - at + extra;
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
    ) -> Result<FileWriter<'_, W, P>> {
        let why = "metadata is not a regular file's";
        require(meta.stat.is_regular(), "file", name, why)?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        let header = Header {
            htype: PAYLOAD,
            full_size: HEADER_SIZE + size,
        }
        .to_bytes();
        if let Some(offset) = self.payload_position() {
            // The reference points at the PAYLOAD header, which separates payloads.
            self.payload_raw(&header)?;
            self.u64s(PAYLOAD_REF, &[offset, size])?;
            if let Some(p) = &mut self.payload {
                p.refs_end = offset + HEADER_SIZE + size;
            }
        } else {
            self.raw(&header)?;
        }
        Ok(FileWriter {
            enc: self,
            name: name.to_vec(),
            at,
            size,
            remaining: size,
            done: false,
        })
    }

    /// A regular file of a split archive whose PAYLOAD (header at `offset`, `size`
    /// bytes) is already in the payload stream: injected whole chunks of an earlier
    /// stream (`payload_injected`). References must go forward through the stream.
    /// Its goodbye size is its metadata plus its payload length, as for a file written
    /// now (`create_file`): pxar 1.0.0's `add_payload_ref` counts the metadata alone,
    /// and readers accept both (spec §7.1), but one convention keeps the metadata stream
    /// of an unchanged tree byte for byte what the previous run wrote, so its chunks
    /// are reused instead of rewritten.
    pub fn add_payload_ref(
        &mut self,
        name: &[u8],
        meta: &Metadata,
        offset: u64,
        size: u64,
    ) -> Result<LinkOffset> {
        let why = "metadata is not a regular file's";
        require(meta.stat.is_regular(), "file", name, why)?;
        let (refs_end, pos) = match &self.payload {
            Some(p) => (p.refs_end, p.pos),
            None => {
                return Err(Error::invalid(
                    what(),
                    "a PAYLOAD_REF needs a split archive",
                ))
            }
        };
        let end = offset.checked_add(HEADER_SIZE + size);
        let ok = offset >= refs_end && end.is_some_and(|e| e <= pos);
        require(
            ok,
            "file",
            name,
            "its payload reference is not after the previous one, inside the payload stream",
        )?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        self.u64s(PAYLOAD_REF, &[offset, size])?;
        self.end_entry(name, at, size);
        if let Some(p) = &mut self.payload {
            p.refs_end = end.expect("checked");
        }
        Ok(LinkOffset(at))
    }

    /// The payload output, for bytes the caller adds itself (whole chunks of an earlier
    /// payload stream); report them with `payload_injected`.
    pub fn payload_mut(&mut self) -> Option<&mut P> {
        self.payload.as_mut().map(|p| &mut p.out)
    }

    /// `added` bytes went into the payload output through `payload_mut`, the first
    /// `absorbed` of them replacing the same bytes written last (the start marker, which
    /// the first injected chunk of an earlier stream begins with). `ends_with_tail`: they
    /// end with a PAYLOAD_TAIL_MARKER header, so closing writes none unless more follows.
    pub fn payload_injected(
        &mut self,
        absorbed: u64,
        added: u64,
        ends_with_tail: bool,
    ) -> Result<()> {
        let p = self
            .payload
            .as_mut()
            .ok_or_else(|| Error::invalid(what(), "not a split archive"))?;
        if absorbed > p.pos.saturating_sub(p.refs_end) || absorbed > added {
            return Err(Error::invalid(
                what(),
                "absorbed payload bytes that are referenced or not replaced",
            ));
        }
        p.pos = p.pos - absorbed + added;
        p.tail_present = ends_with_tail;
        Ok(())
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
        self.end_entry(name, at, 0);
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
        self.end_entry(name, at, 0);
        Ok(())
    }

    /// A FIFO or a socket: ENTRY and attributes, no content item.
    pub fn add_fifo_or_socket(&mut self, name: &[u8], meta: &Metadata) -> Result<()> {
        let why = "metadata is not a FIFO's or socket's";
        require(meta.stat.is_fifo_or_socket(), "entry", name, why)?;
        let at = self.start_entry(name)?;
        self.write_metadata(meta)?;
        self.end_entry(name, at, 0);
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
        self.end_entry(name, at, 0);
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

    /// Close the root directory and hand back the output, flushed (a split archive's
    /// payload stream gets its tail marker and is dropped: use `finish_split`).
    pub fn finish(self) -> Result<W> {
        Ok(self.close()?.0)
    }

    /// Close a split archive: both outputs, flushed, the payload stream ended by its
    /// tail marker.
    pub fn finish_split(self) -> Result<(W, P)> {
        if self.payload.is_none() {
            return Err(Error::invalid(what(), "not a split archive"));
        }
        let (out, payload) = self.close()?;
        Ok((out, payload.expect("checked: split")))
    }

    fn close(mut self) -> Result<(W, Option<P>)> {
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
        if self.payload.as_ref().is_some_and(|p| !p.tail_present) {
            self.payload_raw(
                &Header {
                    htype: PAYLOAD_TAIL_MARKER,
                    full_size: HEADER_SIZE,
                }
                .to_bytes(),
            )?;
        }
        self.out.flush().ctx(what())?;
        let payload = match self.payload {
            Some(mut p) => {
                p.out.flush().ctx("pxar payload stream")?;
                Some(p.out)
            }
            None => None,
        };
        Ok((self.out, payload))
    }
}

#[cfg(test)]
mod tests;
