//! The chunk store `.chunks/<4hex>/<64hex>` (spec §1.2): insert (temp + rename, PBS's
//! replacement rules), `read_verified` (the only way chunk bytes reach a reader), atime
//! touch for GC, and iteration over every chunk file. Over 500 lines with its tests (the
//! code is ~370), which pin PBS's insert rules.

pub mod cache;
pub mod reader;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::store::files::{self, Owner, TempFile};
use crate::store::format::blob::{self, BlobKind};
use crate::store::format::blob_read;
use crate::store::progress::{Progress, ProgressFn};
use crate::store::root::StoreRoot;
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Error, IoContext, Result};
use crate::util::sys;

const CHUNK_DIR_MODE: u32 = 0o750;
const CHUNK_FILE_MODE: u32 = 0o644;

/// A chunk that cannot be trusted, named by digest and path (every chunk read's error).
pub(super) fn chunk_corrupt(digest: &Digest, path: &Path, why: CorruptKind) -> Error {
    Error::ChunkCorrupt {
        digest: *digest,
        path: path.to_path_buf(),
        why,
    }
}

/// What `insert_chunk` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The chunk was new and has been written.
    New,
    /// A chunk of that digest was already there and was kept (its atime touched).
    Existed,
    /// An existing chunk file was replaced (it was empty or a larger encoding).
    Replaced,
}

/// What `verify_chunk` could establish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkCheck {
    /// CRC, decode, digest and length all good.
    Verified,
    /// Encrypted: CRC and encoded size good; content not verifiable without the key.
    EncryptedUnverifiable,
}

/// One file found in a prefix folder.
#[derive(Debug, Clone)]
pub struct ChunkFile {
    pub path: PathBuf,
    pub kind: ChunkFileKind,
    pub size: u64,
    pub atime: i64,
    pub atime_nsec: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkFileKind {
    Chunk(Digest),
    /// `<64hex>.<n>.bad`, renamed by verify.
    Bad(Digest),
    /// Anything else (temp files of an interrupted insert, foreign files).
    Other,
}

#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    owner: Owner,
    /// The store root every chunk file is read beneath (no symlink followed).
    fs: StoreRoot,
    /// Why chunk data cannot be read here (S3: the files are zero-length markers).
    unreadable: Option<String>,
}

impl ChunkStore {
    /// Open the chunk store of the datastore at `root`.
    pub fn open(root: &Path, owner: Owner) -> Result<ChunkStore> {
        let dir = root.join(".chunks");
        if !dir.is_dir() {
            return Err(Error::NotADatastore {
                path: root.to_path_buf(),
            });
        }
        Ok(ChunkStore {
            dir,
            owner,
            fs: StoreRoot::open(root)?,
            unreadable: None,
        })
    }

    /// The same store, whose chunk reads fail with `why` instead of touching the files.
    pub fn refusing_reads(self, why: String) -> ChunkStore {
        ChunkStore {
            unreadable: Some(why),
            ..self
        }
    }

    /// Create `.chunks/` (0750) and, when `full`, all 65536 prefix folders as PBS does.
    /// A sparse store (`full == false`) gets its prefix folders on first insert.
    pub fn create(root: &Path, owner: Owner, full: bool) -> Result<ChunkStore> {
        Self::create_with_progress(root, owner, full, None)
    }

    /// `create`, reporting the prefix folders made (seconds on a slow disk).
    pub fn create_with_progress(
        root: &Path,
        owner: Owner,
        full: bool,
        progress: Option<ProgressFn>,
    ) -> Result<ChunkStore> {
        let dir = root.join(".chunks");
        files::create_dir(&dir, CHUNK_DIR_MODE, owner)?;
        if full {
            for i in 0..=0xffffu32 {
                let p = dir.join(format!("{i:04x}"));
                files::create_dir(&p, CHUNK_DIR_MODE, owner)?;
                if let Some(report) = progress {
                    report(Progress::ChunkFolders {
                        done: u64::from(i) + 1,
                        total: 0x10000,
                    });
                }
            }
        }
        Ok(ChunkStore {
            dir,
            owner,
            fs: StoreRoot::open(root)?,
            unreadable: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn chunk_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.prefix()).join(digest.to_hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.fs.is_file(&self.chunk_path(digest))
    }

    /// Encode plain chunk data (zstd when it helps) and insert it under its digest.
    /// Returns the digest, what happened, and the encoded size.
    pub fn insert_plain(&self, data: &[u8]) -> Result<(Digest, Inserted, u64)> {
        if data.is_empty() || data.len() > blob::MAX_CHUNK_SIZE {
            return Err(Error::invalid(
                format!("chunk of {} bytes", data.len()),
                format!("outside 1..={}", blob::MAX_CHUNK_SIZE),
            ));
        }
        let digest = Digest::of(data);
        blob::encode_with(data, true, |enc| {
            Ok((digest, self.insert_chunk(&digest, enc)?, enc.len() as u64))
        })
    }

    /// Insert an encoded chunk. Rules of spec §1.2: an existing chunk of the same size is
    /// touched, not rewritten; an empty one is overwritten; an unencrypted one is never
    /// replaced by an encrypted one; otherwise the smaller encoding is kept.
    pub fn insert_chunk(&self, digest: &Digest, encoded: &[u8]) -> Result<Inserted> {
        // The protocol's bounds on an encoded chunk (spec §2.2): 13..=16 MiB + 44.
        if encoded.len() < blob::HEADER_LEN + 1 || encoded.len() > blob::MAX_ENCODED_SIZE {
            return Err(Error::invalid(
                format!("chunk {digest}"),
                format!(
                    "encoded size {} is outside 13..={}",
                    encoded.len(),
                    blob::MAX_ENCODED_SIZE
                ),
            ));
        }
        let new_kind = BlobKind::from_magic(encoded.get(..8).unwrap_or(&[]))
            .ok_or_else(|| Error::invalid(format!("chunk {digest}"), "not a DataBlob"))?;
        let path = self.chunk_path(digest);
        // Everything through the opened prefix folder: no symlink is followed.
        let dir = self.fs.ensure_dir(
            path.parent().expect("prefix folder"),
            CHUNK_DIR_MODE,
            self.owner,
        )?;
        let name = digest.to_hex();
        let replace = match fs::symlink_metadata(dir.join(&name)) {
            // Anything but a regular file (a planted symlink, a FIFO) is replaced.
            Ok(md) if !md.is_file() => true,
            Ok(md) => {
                let old_len = md.len();
                if old_len == encoded.len() as u64 {
                    self.touch(digest)?;
                    return Ok(Inserted::Existed);
                }
                if old_len > 0 {
                    let old_kind = read_magic(&dir.join(&name), &path)?;
                    if new_kind.is_encrypted() && old_kind.is_some_and(|k| !k.is_encrypted()) {
                        return Err(Error::NotPermitted {
                            what: format!("chunk {digest}"),
                            why: "refusing to replace an unencrypted chunk with an encrypted one"
                                .into(),
                        });
                    }
                    if old_kind.is_some() && old_len <= encoded.len() as u64 {
                        self.touch(digest)?;
                        return Ok(Inserted::Existed);
                    }
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let mut tmp = TempFile::new(&dir.path(), &name, CHUNK_FILE_MODE, self.owner)?;
        tmp.write_all(encoded)?;
        tmp.persist(&dir.join(&name))
            .map_err(|e| e.context(format!("chunk {digest} ({})", path.display())))?;
        Ok(if replace {
            Inserted::Replaced
        } else {
            Inserted::New
        })
    }

    fn read_raw(&self, digest: &Digest) -> Result<(PathBuf, Vec<u8>)> {
        self.read_chunk_file(digest, |read, _| {
            let mut raw = Vec::new();
            blob_read::read_to_end(read, &mut raw)?;
            Ok(raw)
        })
    }

    /// Open the chunk file of `digest` (never through a symlink, never a FIFO) and hand
    /// `consume` a `read` over its bytes (as `Read::read`, 0 at the end) that never yields
    /// more than a chunk file can be, and the path. Errors of either name the digest and
    /// the path; a file too large is one, whatever `consume` found.
    fn read_chunk_file<T>(
        &self,
        digest: &Digest,
        consume: impl FnOnce(&mut dyn FnMut(&mut [u8]) -> Result<usize>, &Path) -> Result<T>,
    ) -> Result<(PathBuf, T)> {
        let path = self.chunk_path(digest);
        if let Some(why) = &self.unreadable {
            return Err(Error::Unavailable {
                what: format!("chunk {digest}"),
                why: why.clone(),
            });
        }
        let limit = blob::MAX_ENCODED_SIZE as u64;
        let read = || -> Result<T> {
            let (file, md) = self.fs.open_file(&path)?;
            let too_large =
                |len, why| Error::corrupt(path.display(), CorruptKind::Size { len, why });
            if md.len() > limit {
                return Err(too_large(
                    md.len(),
                    "larger than its format allows (not read)",
                ));
            }
            // The file may grow meanwhile: never read past the limit.
            let mut file = file.take(limit + 1);
            let res = consume(&mut |buf| file.read(buf).ctx(path.display()), &path);
            if file.limit() == 0 {
                return Err(too_large(limit + 1, "grew past what its format allows"));
            }
            res
        };
        match read() {
            Ok(t) => Ok((path, t)),
            Err(e) => Err(match e.kind() {
                Error::NotFound { .. } => Error::ChunkMissing {
                    digest: *digest,
                    path,
                },
                Error::Corrupt { why, .. } => chunk_corrupt(digest, &path, why.clone()),
                _ => e,
            }),
        }
    }

    /// The only way chunk bytes reach a reader: CRC, decode, SHA-256 equal to `digest`,
    /// and the length the index expects. Every error names the digest and the path.
    /// (`read_verified_into` with fresh buffers.)
    pub fn read_verified(&self, digest: &Digest, expected_len: Option<u64>) -> Result<Vec<u8>> {
        self.read_verified_into(digest, expected_len, Vec::new())
    }

    /// `read_verified` into a recycled buffer: the chunk file is decoded as it is read,
    /// in pieces, into `out` (cleared first, its capacity reused), which is returned once
    /// verified. With `expected_len`, `out` needs no more than that many bytes and one.
    pub fn read_verified_into(
        &self,
        digest: &Digest,
        expected_len: Option<u64>,
        mut out: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let (path, ()) = self.read_chunk_file(digest, |read, path| {
            self.decode_chunk(digest, path, expected_len, read, &mut out)
        })?;
        let bad = |why| chunk_corrupt(digest, &path, why);
        if let Some(len) = expected_len {
            if out.len() as u64 != len {
                return Err(bad(CorruptKind::Length {
                    actual: out.len() as u64,
                    expected: len,
                }));
            }
        }
        if Digest::of(&out) != *digest {
            return Err(bad(CorruptKind::DigestMismatch));
        }
        Ok(out)
    }

    /// Decode a chunk file's bytes (`read`) into `out`. A plain corruption is named
    /// after the chunk by `read_chunk_file`; here only what needs the index's length or
    /// the digest.
    fn decode_chunk(
        &self,
        digest: &Digest,
        path: &Path,
        expected_len: Option<u64>,
        read: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let limit = expected_len
            .map(|l| {
                usize::try_from(l)
                    .unwrap_or(usize::MAX)
                    .min(blob::MAX_CHUNK_SIZE)
            })
            .unwrap_or(blob::MAX_CHUNK_SIZE);
        blob_read::decode_read_into(read, limit, out).map_err(|e| match e {
            // More than the index says: "at least one byte too long".
            Error::Corrupt {
                why: CorruptKind::Oversized { .. },
                ..
            } if expected_len.is_some() => chunk_corrupt(
                digest,
                path,
                CorruptKind::Length {
                    actual: limit as u64 + 1,
                    expected: expected_len.unwrap_or(0),
                },
            ),
            Error::Encrypted { .. } => Error::Encrypted {
                what: format!("chunk {digest} ({})", path.display()),
            },
            other => other,
        })
    }

    /// Verify a chunk as PBS's verify does: an unencrypted chunk fully (as `read_verified`);
    /// an encrypted one by CRC and plausible encoded size only.
    pub fn verify_chunk(&self, digest: &Digest, expected_len: Option<u64>) -> Result<ChunkCheck> {
        match self.read_verified(digest, expected_len) {
            Ok(_) => Ok(ChunkCheck::Verified),
            Err(Error::Encrypted { .. }) => {
                let (path, raw) = self.read_raw(digest)?;
                // The CRC passed inside decode before it refused to decrypt.
                let payload = raw.len() - blob::ENCRYPTED_HEADER_LEN;
                if let Some(len) = expected_len {
                    // Ciphertext of a compressed payload can be smaller, never much larger.
                    if payload as u64 > len + 4096 {
                        return Err(chunk_corrupt(
                            digest,
                            &path,
                            CorruptKind::Size {
                                len: raw.len() as u64,
                                why: "an encrypted payload too large for its index length",
                            },
                        ));
                    }
                }
                Ok(ChunkCheck::EncryptedUnverifiable)
            }
            Err(e) => Err(e),
        }
    }

    /// Set the chunk's atime to now (GC mark). `Ok(false)` when it does not exist.
    pub fn touch(&self, digest: &Digest) -> Result<bool> {
        let path = self.chunk_path(digest);
        let dir = match self.fs.dir(path.parent().expect("prefix folder")) {
            Ok(d) => d,
            Err(e) if matches!(e.kind(), Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match sys::touch_atime_at(dir.file(), digest.to_hex().as_ref()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(
                format!("touch chunk {digest} ({})", path.display()),
                e,
            )),
        }
    }

    /// Rename a corrupt chunk to `<digest>.<n>.bad` (first free n in 0..=9, capped at 9).
    pub fn rename_bad(&self, digest: &Digest) -> Result<PathBuf> {
        let path = self.chunk_path(digest);
        let dir = self.fs.dir(path.parent().expect("prefix folder"))?;
        let mut bad = String::new();
        for n in 0..=9 {
            bad = format!("{}.{n}.bad", digest.to_hex());
            if fs::symlink_metadata(dir.join(&bad)).is_err() {
                break;
            }
        }
        fs::rename(dir.join(digest.to_hex()), dir.join(&bad))
            .ctx(format!("rename {} to .bad", path.display()))?;
        Ok(path.with_file_name(bad))
    }

    /// Every file of one prefix folder (0..=0xffff); a missing folder is empty.
    pub fn list_prefix(&self, prefix: u16) -> Result<Vec<ChunkFile>> {
        let dir = self.dir.join(format!("{prefix:04x}"));
        let Some(listing) = self.fs.read_dir(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in listing.names() {
            // One fstatat through the folder's descriptor: size, atime and type at once
            // (a chunk renamed or removed meanwhile is simply gone).
            let st = match listing.stat(name) {
                Ok(st) => st,
                Err(e) if matches!(e.kind(), Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if !st.is_file() {
                continue;
            }
            out.push(ChunkFile {
                path: dir.join(name),
                kind: classify(&name.to_string_lossy()),
                size: st.size,
                atime: st.atime,
                atime_nsec: st.atime_nsec,
            });
        }
        Ok(out)
    }
}

/// The magic of an existing chunk file (`at`: its path through the opened folder).
fn read_magic(at: &Path, path: &Path) -> Result<Option<BlobKind>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(at)
        .ctx(path.display())?;
    let mut m = [0u8; 8];
    match f.read_exact(&mut m) {
        Ok(()) => Ok(BlobKind::from_magic(&m)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Name patterns of spec §1.2: 64 hex, or 64 hex + `.<digit>.bad`.
fn classify(name: &str) -> ChunkFileKind {
    if name.len() == 64 {
        if let Some(d) = Digest::from_hex(name) {
            if name.bytes().all(|b| !b.is_ascii_uppercase()) {
                return ChunkFileKind::Chunk(d);
            }
        }
    } else if name.len() == 70 && name.ends_with(".bad") && name.as_bytes()[64] == b'.' {
        if let (Some(d), true) = (
            Digest::from_hex(&name[..64]),
            name.as_bytes()[65].is_ascii_digit(),
        ) {
            return ChunkFileKind::Bad(d);
        }
    }
    ChunkFileKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn store() -> (PathBuf, ChunkStore) {
        let root = std::env::temp_dir().join(format!(
            "pbsfs-cs-{}-{}",
            std::process::id(),
            files::random_suffix(6)
        ));
        fs::create_dir_all(&root).unwrap();
        let owner = Owner::of(&root).unwrap();
        let cs = ChunkStore::create(&root, owner, false).unwrap();
        (root, cs)
    }

    #[test]
    fn insert_then_read_verified_and_existing_chunks_are_kept() {
        let (root, cs) = store();
        let data = vec![42u8; 10_000];
        let (d, what, _) = cs.insert_plain(&data).unwrap();
        assert_eq!(what, Inserted::New);
        assert_eq!(cs.read_verified(&d, Some(10_000)).unwrap(), data);
        let ino = fs::metadata(cs.chunk_path(&d)).unwrap().ino();
        assert_eq!(cs.insert_plain(&data).unwrap().1, Inserted::Existed);
        assert_eq!(
            fs::metadata(cs.chunk_path(&d)).unwrap().ino(),
            ino,
            "not rewritten"
        );
        // An empty leftover is overwritten.
        fs::write(cs.chunk_path(&d), b"").unwrap();
        assert_eq!(cs.insert_plain(&data).unwrap().1, Inserted::Replaced);
        assert_eq!(cs.read_verified(&d, None).unwrap(), data);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_chunk_whose_content_does_not_hash_to_its_name_is_a_digest_error_naming_it() {
        let (root, cs) = store();
        let fake = Digest::of(b"something else");
        cs.insert_chunk(&fake, &blob::encode(b"content", false).unwrap())
            .unwrap();
        let err = cs.read_verified(&fake, None).unwrap_err();
        assert!(matches!(
            &err,
            Error::ChunkCorrupt { digest, why: CorruptKind::DigestMismatch, .. } if *digest == fake
        ));
        let msg = err.to_string();
        assert!(
            msg.contains(&fake.to_hex()) && msg.contains("digest mismatch"),
            "{msg}"
        );
        assert!(
            msg.contains(&cs.chunk_path(&fake).display().to_string()),
            "{msg}"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn length_flip_and_missing_are_corrupt() {
        let (root, cs) = store();
        let (d, _, _) = cs.insert_plain(&[1u8; 100]).unwrap();
        for (claimed, actual) in [(99, 100), (101, 100)] {
            assert!(matches!(
                cs.read_verified(&d, Some(claimed)).unwrap_err(),
                Error::ChunkCorrupt {
                    why: CorruptKind::Length { actual: a, expected },
                    ..
                } if a == actual && expected == claimed
            ));
        }
        let p = cs.chunk_path(&d);
        let mut raw = fs::read(&p).unwrap();
        let n = raw.len() - 1;
        raw[n] ^= 1;
        fs::write(&p, &raw).unwrap();
        assert!(matches!(
            cs.read_verified(&d, None).unwrap_err(),
            Error::ChunkCorrupt {
                why: CorruptKind::Crc { .. },
                ..
            }
        ));
        fs::remove_file(&p).unwrap();
        let e = cs.read_verified(&d, None).unwrap_err();
        assert!(matches!(e, Error::ChunkMissing { digest, .. } if digest == d));
        assert_eq!(e.errno(), libc::EIO);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn encoded_chunks_outside_the_protocol_bounds_are_refused() {
        let (root, cs) = store();
        let d = Digest::of(b"");
        let empty = blob::encode(b"", false).unwrap();
        assert_eq!(empty.len(), 12);
        assert!(matches!(
            cs.insert_chunk(&d, &empty),
            Err(Error::InvalidInput { .. })
        ));
        let huge = blob::encode(&vec![0u8; blob::MAX_ENCODED_SIZE], false).unwrap();
        assert!(matches!(
            cs.insert_chunk(&d, &huge),
            Err(Error::InvalidInput { .. })
        ));
        assert!(cs
            .insert_plain(&vec![1u8; blob::MAX_CHUNK_SIZE + 1])
            .is_err());
        let max = vec![1u8; blob::MAX_CHUNK_SIZE];
        assert_eq!(cs.insert_plain(&max).unwrap().1, Inserted::New);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn listing_classifies_chunks_bad_and_other_files() {
        let (root, cs) = store();
        let (d, _, _) = cs.insert_plain(b"x").unwrap();
        let bad = cs.rename_bad(&d).unwrap();
        assert!(bad.to_string_lossy().ends_with(".0.bad"));
        cs.insert_plain(b"x").unwrap();
        let dir = cs.chunk_path(&d).parent().unwrap().to_path_buf();
        fs::write(dir.join(format!("{}.tmp_abcdef", d.to_hex())), b"").unwrap();
        let prefix = u16::from_str_radix(&d.prefix(), 16).unwrap();
        let mut kinds: Vec<_> = cs
            .list_prefix(prefix)
            .unwrap()
            .into_iter()
            .map(|f| f.kind)
            .collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(
            kinds,
            vec![
                ChunkFileKind::Bad(d),
                ChunkFileKind::Chunk(d),
                ChunkFileKind::Other
            ]
        );
        assert!(cs.touch(&d).unwrap());
        assert!(!cs.touch(&Digest::of(b"none")).unwrap());
        fs::remove_dir_all(root).unwrap();
    }
}
