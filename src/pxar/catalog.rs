//! The catalog `catalog.pcat1` (spec §7.2): the file list PBS's file browser and
//! `proxmox-backup-client catalog` read. Writer: directory blocks written as each
//! directory ends (children before parents), the root block last, then its offset.
//! Reader: random access through `ReadAt`, every offset and length checked against the
//! file, so bad input is an error naming the offset, never a panic or a huge allocation.

use std::io::Write;

use crate::util::error::{Error, IoContext, Result};
use crate::util::ReadAt;

/// `sha256("Proxmox Backup Catalog file v1.0")[0..8]`.
pub const CATALOG_MAGIC: [u8; 8] = [145, 253, 96, 249, 196, 103, 88, 213];
/// The longest name PBS's reader accepts (its name buffer is 4096 bytes).
pub const MAX_NAME: usize = 4095;

/// What a catalog entry is, and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogAttr {
    /// A directory: its block's offset in the catalog.
    Dir {
        start: u64,
    },
    File {
        size: u64,
        mtime: i64,
    },
    Symlink,
    Hardlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

impl CatalogAttr {
    /// The type byte: `d f l h b c p s`.
    pub fn type_byte(&self) -> u8 {
        match self {
            CatalogAttr::Dir { .. } => b'd',
            CatalogAttr::File { .. } => b'f',
            CatalogAttr::Symlink => b'l',
            CatalogAttr::Hardlink => b'h',
            CatalogAttr::BlockDevice => b'b',
            CatalogAttr::CharDevice => b'c',
            CatalogAttr::Fifo => b'p',
            CatalogAttr::Socket => b's',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub name: Vec<u8>,
    pub attr: CatalogAttr,
}

/// u64 varint: 7 bits per byte, least significant group first, high bit = more.
pub fn encode_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 128 {
        out.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    out.push(v as u8);
}

/// i64 varint: the magnitude as a u64 varint; a negative value keeps the high bit on
/// its last group and ends with an extra 0x00.
pub fn encode_i64(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        return encode_u64(out, v as u64);
    }
    let mut d = v.unsigned_abs();
    while d >= 128 {
        out.push(0x80 | (d & 0x7f) as u8);
        d >>= 7;
    }
    out.push(0x80 | d as u8);
    out.push(0);
}

/// A directory being written: its entries wait until it ends, since a `d` entry's
/// distance depends on where its parent's block lands.
struct OpenDir {
    name: Vec<u8>,
    entries: Vec<CatalogEntry>,
}

/// Writes a catalog. Usage: `start_directory` per archive (named after the server
/// archive name, e.g. `root.pxar.didx`), its entries (in stream order), `end_directory`;
/// then `finish`.
pub struct CatalogWriter<W: Write> {
    out: W,
    pos: u64,
    dirs: Vec<OpenDir>,
}

impl<W: Write> CatalogWriter<W> {
    pub fn new(mut out: W) -> Result<CatalogWriter<W>> {
        out.write_all(&CATALOG_MAGIC).ctx("catalog")?;
        Ok(CatalogWriter {
            out,
            pos: CATALOG_MAGIC.len() as u64,
            dirs: vec![OpenDir {
                name: Vec::new(),
                entries: Vec::new(),
            }],
        })
    }

    /// The output, e.g. to ask it for an error it could not pass through `Write`.
    pub fn output_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn push(&mut self, name: &[u8], attr: CatalogAttr) -> Result<()> {
        if name.is_empty() || name.len() > MAX_NAME || name.contains(&b'/') {
            return Err(Error::invalid(
                format!("catalog entry {:?}", String::from_utf8_lossy(name)),
                "not a file name of at most 4095 bytes",
            ));
        }
        let dir = self.dirs.last_mut().expect("the root is open until finish");
        dir.entries.push(CatalogEntry {
            name: name.to_vec(),
            attr,
        });
        Ok(())
    }

    pub fn start_directory(&mut self, name: &[u8]) -> Result<()> {
        // Checked now, used when the directory ends.
        self.push(name, CatalogAttr::Dir { start: 0 })?;
        let dir = self.dirs.last_mut().expect("root");
        dir.entries.pop();
        self.dirs.push(OpenDir {
            name: name.to_vec(),
            entries: Vec::new(),
        });
        Ok(())
    }

    /// Write the directory's block; its entry joins the parent.
    pub fn end_directory(&mut self) -> Result<()> {
        if self.dirs.len() < 2 {
            return Err(Error::invalid("catalog", "no directory is open"));
        }
        let dir = self.dirs.pop().expect("checked");
        let start = self.write_block(&dir.entries)?;
        self.push(&dir.name, CatalogAttr::Dir { start })
    }

    pub fn add_file(&mut self, name: &[u8], size: u64, mtime: i64) -> Result<()> {
        self.push(name, CatalogAttr::File { size, mtime })
    }

    /// Any entry but a directory (those go through `start_directory`).
    pub fn add_entry(&mut self, name: &[u8], attr: CatalogAttr) -> Result<()> {
        if let CatalogAttr::Dir { .. } = attr {
            return Err(Error::invalid(
                "catalog",
                "directories are started, not added",
            ));
        }
        self.push(name, attr)
    }

    /// A block at the current position: varint length, then varint count and entries.
    fn write_block(&mut self, entries: &[CatalogEntry]) -> Result<u64> {
        let start = self.pos;
        let mut table = Vec::new();
        encode_u64(&mut table, entries.len() as u64);
        for e in entries {
            table.push(e.attr.type_byte());
            encode_u64(&mut table, e.name.len() as u64);
            table.extend_from_slice(&e.name);
            match e.attr {
                CatalogAttr::Dir { start: child } => encode_u64(&mut table, start - child),
                CatalogAttr::File { size, mtime } => {
                    encode_u64(&mut table, size);
                    encode_i64(&mut table, mtime);
                }
                _ => {}
            }
        }
        let mut block = Vec::with_capacity(table.len() + 10);
        encode_u64(&mut block, table.len() as u64);
        block.extend_from_slice(&table);
        self.out.write_all(&block).ctx("catalog")?;
        self.pos += block.len() as u64;
        Ok(start)
    }

    /// Write the root block and its offset; hand back the output, flushed.
    pub fn finish(mut self) -> Result<W> {
        if self.dirs.len() != 1 {
            return Err(Error::invalid(
                "catalog",
                format!("{} directories still open", self.dirs.len() - 1),
            ));
        }
        let root = self.dirs.pop().expect("root");
        let start = self.write_block(&root.entries)?;
        self.out.write_all(&start.to_le_bytes()).ctx("catalog")?;
        self.out.flush().ctx("catalog")?;
        Ok(self.out)
    }
}

/// Reads a catalog through random access.
pub struct CatalogReader<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    /// The root block's offset; every block lies before it or is it.
    root: u64,
    /// Where the trailing root offset starts: no block reaches past it.
    end: u64,
}

fn bad(at: u64, why: impl std::fmt::Display) -> Error {
    Error::format("catalog", format!("at offset {at}: {why}"))
}

/// A cursor over one block, every read bounds-checked.
struct Cursor<'b> {
    data: &'b [u8],
    at: usize,
    base: u64,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .data
            .get(self.at)
            .ok_or_else(|| bad(self.base + self.at as u64, "block ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            let bits = (b & 0x7f) as u64;
            if i == 9 && bits > 1 {
                return Err(bad(self.base + self.at as u64, "varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad(self.base + self.at as u64, "varint without end"))
    }

    fn i64(&mut self) -> Result<i64> {
        let mut v = 0u64;
        for i in 0..11 {
            let b = self.byte()?;
            if b == 0 && i > 0 {
                // The terminator of a negative value: the magnitude came before.
                return Ok(0i64.wrapping_sub_unsigned(v));
            }
            if i == 10 {
                break;
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v as i64);
            }
        }
        Err(bad(self.base + self.at as u64, "signed varint without end"))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or_else(|| bad(self.base + self.at as u64, "name runs past its block"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
}

impl<'a, R: ReadAt + ?Sized> CatalogReader<'a, R> {
    pub fn open(src: &'a R) -> Result<CatalogReader<'a, R>> {
        let size = src.size();
        if size < 16 {
            return Err(bad(0, format!("{size} bytes: too short for a catalog")));
        }
        let mut magic = [0u8; 8];
        read_exact(src, 0, &mut magic)?;
        if magic != CATALOG_MAGIC {
            return Err(bad(0, "not a catalog (unknown magic)"));
        }
        let mut tail = [0u8; 8];
        read_exact(src, size - 8, &mut tail)?;
        let root = u64::from_le_bytes(tail);
        if root < 8 || root >= size - 8 {
            return Err(bad(
                size - 8,
                format!("root block offset {root} outside the file"),
            ));
        }
        Ok(CatalogReader {
            src,
            root,
            end: size - 8,
        })
    }

    /// The root block's offset: its entries are one directory per archive.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The entries of the block at `start`. A directory's child block always lies
    /// before its own, so following `Dir` entries can never cycle.
    pub fn read_dir(&self, start: u64) -> Result<Vec<CatalogEntry>> {
        if start < 8 || start >= self.end {
            return Err(bad(start, "directory block outside the file"));
        }
        // The length varint: at most 10 bytes.
        let mut head = [0u8; 10];
        let n = (self.end - start).min(10) as usize;
        read_exact(self.src, start, &mut head[..n])?;
        let mut c = Cursor {
            data: &head[..n],
            at: 0,
            base: start,
        };
        let len = c.u64()?;
        let body = start + c.at as u64;
        if len == 0 || len > self.end - body {
            return Err(bad(start, format!("block length {len} runs past the file")));
        }
        let mut data = vec![0u8; len as usize];
        read_exact(self.src, body, &mut data)?;
        let mut c = Cursor {
            data: &data,
            at: 0,
            base: body,
        };
        let count = c.u64()?;
        let mut out = Vec::new();
        for _ in 0..count {
            let at = c.base + c.at as u64;
            let t = c.byte()?;
            let name_len = c.u64()?;
            if name_len == 0 || name_len > MAX_NAME as u64 {
                return Err(bad(at, format!("name of {name_len} bytes")));
            }
            let name = c.bytes(name_len as usize)?.to_vec();
            if name.contains(&b'/') || name == b"." || name == b".." {
                return Err(bad(at, "a name with '/' or a dot entry"));
            }
            let attr = match t {
                b'd' => {
                    let back = c.u64()?;
                    if back == 0 || back > start - 8 {
                        return Err(bad(at, format!("directory distance {back} out of range")));
                    }
                    CatalogAttr::Dir {
                        start: start - back,
                    }
                }
                b'f' => CatalogAttr::File {
                    size: c.u64()?,
                    mtime: c.i64()?,
                },
                b'l' => CatalogAttr::Symlink,
                b'h' => CatalogAttr::Hardlink,
                b'b' => CatalogAttr::BlockDevice,
                b'c' => CatalogAttr::CharDevice,
                b'p' => CatalogAttr::Fifo,
                b's' => CatalogAttr::Socket,
                other => return Err(bad(at, format!("unknown entry type {other:#04x}"))),
            };
            out.push(CatalogEntry { name, attr });
        }
        if c.at != data.len() {
            return Err(bad(
                body + c.at as u64,
                "bytes after the block's last entry",
            ));
        }
        Ok(out)
    }

    /// Every entry below the block at `start`, depth first, with its path relative to
    /// that block (components joined by `/`), in catalog order.
    pub fn walk(&self, start: u64, f: &mut dyn FnMut(&[u8], &CatalogEntry)) -> Result<()> {
        // A block listed twice is refused: shared blocks would let a small file expand
        // into an exponential walk.
        let mut seen = std::collections::HashSet::from([start]);
        crate::util::walk::walk_tree(
            self.read_dir(start)?.into_iter(),
            entry_name,
            |e| match e.attr {
                CatalogAttr::Dir { start } if !seen.insert(start) => {
                    Err(bad(start, "directory block listed twice"))
                }
                CatalogAttr::Dir { start } => Ok(Some(self.read_dir(start)?.into_iter())),
                _ => Ok(None),
            },
            |path, e| {
                f(path, e);
                Ok(())
            },
        )
    }
}

fn entry_name(e: &CatalogEntry) -> &[u8] {
    &e.name
}

fn read_exact<R: ReadAt + ?Sized>(src: &R, at: u64, buf: &mut [u8]) -> Result<()> {
    let n = src.read_at(at, buf)?;
    if n != buf.len() {
        return Err(bad(at, "unexpected end of file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
