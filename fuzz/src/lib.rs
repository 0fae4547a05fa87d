//! The fuzz entry points: one function per decoder of untrusted bytes, shared by the
//! cargo-fuzz targets (`fuzz/fuzz_targets/`) and the regression test that replays found
//! crashers (`tests/it/fuzz_regressions.rs` includes this file by `#[path]`), so a
//! crasher is replayed through exactly the code that found it.
//!
//! Each function calls the public decoding functions real code calls on bytes read from
//! a datastore, in the order real code calls them, then walks what was decoded as far as
//! a reader would (the mount lists, looks up and reads everything). It returns the
//! decoder's error for bad input, and panics (the finding) when
//! - the decoder panics, or
//! - an error is of a kind that does not say "bad data" (a user would get the wrong
//!   errno or message: ENOENT for a corrupt archive, say), or
//! - what was decoded contradicts itself (a listed name that lookup cannot find, chunk
//!   lengths that do not add up to the index's size, a round trip that changes data).
//!
//! Inputs are the bytes of the file (or stream) itself, except `pxar_split`, which takes
//! two streams: see `split_input`.

use pbsfs::pxar::catalog::{CatalogAttr, CatalogReader};
use pbsfs::pxar::decoder::{Archive, Entry, EntryKind};
use pbsfs::store::format::blob::{self, BlobKind};
use pbsfs::store::format::blob_read;
use pbsfs::store::format::index::dynamic::DYNAMIC_INDEX_MAGIC;
use pbsfs::store::format::index::fixed::FIXED_INDEX_MAGIC;
use pbsfs::store::format::index::{Index, INDEX_HEADER_SIZE};
use pbsfs::store::format::manifest::Manifest;
use pbsfs::util::upid::Upid;
use pbsfs::util::ReadAt;
use pbsfs::{Error, Result};

/// The output cap `blob` gives `decode_into`, as a chunk reader gives it the index's
/// chunk length: small, so the fuzzer reaches "more output than the index says" fast.
pub const BLOB_CHUNK_LIMIT: usize = 64 * 1024;

/// A walk visits at most this many pxar entries or catalog entries: each visit costs
/// at least a header of the input, so real inputs never reach it; it only keeps one
/// execution short if a decoder were to hand out entries without consuming bytes.
const MAX_VISITS: usize = 100_000;

/// The read size of `pxar`'s content reads and of `index`'s body checker (an odd size,
/// so entries straddle block boundaries as they do when `read` returns short counts).
const BLOCK: usize = 4093;

/// The error kinds that mean "these bytes are bad" (EIO, or ENOKEY for an encrypted
/// blob, EINVAL for a bad task id): anything else would tell the user something false.
fn data_error(e: Error, allowed: &[fn(&Error) -> bool]) -> Error {
    assert!(
        allowed.iter().any(|ok| ok(e.kind())),
        "bad input gave an error of the wrong kind: {e:?}"
    );
    e
}

fn corrupt(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

fn encrypted(e: &Error) -> bool {
    matches!(e, Error::Encrypted { .. })
}

fn invalid_verify_state(e: &Error) -> bool {
    matches!(e, Error::InvalidVerifyState { .. })
}

fn invalid_input(e: &Error) -> bool {
    matches!(e, Error::InvalidInput { .. })
}

/// A DataBlob (chunk, manifest, `.blob` archive): decoded as given, and once more with
/// its CRC made right (mutated inputs almost never pass the CRC, so without the second
/// pass the fuzzer would never reach the zstd decoder behind it). Returns the first
/// pass's result.
pub fn blob(data: &[u8]) -> Result<()> {
    let as_given = blob_steps(data);
    if let Some(fixed) = with_crc_fixed(data) {
        let _ = blob_steps(&fixed);
    }
    as_given
}

/// `data` with the CRC-32 its header stores replaced by that of its payload; `None`
/// when it has no known magic or is shorter than its header.
pub fn with_crc_fixed(data: &[u8]) -> Option<Vec<u8>> {
    let kind = BlobKind::from_magic(data.get(..8)?)?;
    let hlen = if kind.is_encrypted() {
        blob::ENCRYPTED_HEADER_LEN
    } else {
        blob::HEADER_LEN
    };
    let payload = data.get(hlen..)?;
    let mut out = data.to_vec();
    out[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Some(out)
}

/// `blob::decode` as the manifest and blob readers call it, and `blob::decode_into` as
/// the chunk store calls it, with an index's chunk length as limit. Both must agree:
/// same bytes, and one refuses only what the other does (or what exceeds the smaller
/// limit).
fn blob_steps(data: &[u8]) -> Result<()> {
    let allowed: &[fn(&Error) -> bool] = &[corrupt, encrypted];
    let whole = blob::decode(data);
    let mut out = Vec::new();
    let limited = blob::decode_into(data, BLOB_CHUNK_LIMIT, &mut out);
    match (&whole, &limited) {
        (Ok(plain), Ok(())) => assert_eq!(plain, &out, "decode and decode_into differ"),
        (Ok(plain), Err(e)) => assert!(
            plain.len() > BLOB_CHUNK_LIMIT,
            "decode_into refused {} bytes that decode accepted: {e:?}",
            plain.len()
        ),
        (Err(e), Ok(())) => panic!("decode refused what decode_into accepted: {e:?}"),
        (Err(_), Err(_)) => {}
    }
    if limited.is_ok() {
        assert!(
            out.len() <= BLOB_CHUNK_LIMIT,
            "decode_into exceeded its limit"
        );
    }
    // The chunk store's path: the file decoded as it is read, in pieces (their size
    // drawn from the input). It accepts exactly what `decode_into` accepts, and the same.
    let step = 1 + data.len() % 4099;
    let mut at = 0;
    let read = |buf: &mut [u8]| {
        let n = buf.len().min(step).min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        at += n;
        Ok(n)
    };
    let mut streamed = Vec::new();
    match (
        blob_read::decode_read_into(read, BLOB_CHUNK_LIMIT, &mut streamed),
        &limited,
    ) {
        (Ok(()), Ok(())) => assert_eq!(streamed, out, "decode_read_into and decode_into differ"),
        (Ok(()), Err(e)) => panic!("decode_into refused what decode_read_into accepted: {e:?}"),
        (Err(e), Ok(())) => panic!("decode_read_into refused what decode_into accepted: {e:?}"),
        (Err(_), Err(_)) => {}
    }
    limited.map_err(|e| data_error(e, allowed))?;
    whole.map(drop).map_err(|e| data_error(e, allowed))
}

/// A fixed index (`.fidx`); inputs with another magic are not this target's.
pub fn fidx(data: &[u8]) -> Result<()> {
    if data.get(..8) != Some(&FIXED_INDEX_MAGIC[..]) {
        return Ok(());
    }
    index(data)
}

/// A dynamic index (`.didx`); inputs with another magic are not this target's.
pub fn didx(data: &[u8]) -> Result<()> {
    if data.get(..8) != Some(&DYNAMIC_INDEX_MAGIC[..]) {
        return Ok(());
    }
    index(data)
}

/// An index file as `StoreRoot::read_index` reads one: the header's claim checked
/// against the file's length, the body fed block by block to the body checker, then
/// parsed; then every chunk and a few positions looked up as readers do.
fn index(data: &[u8]) -> Result<()> {
    let allowed: &[fn(&Error) -> bool] = &[corrupt];
    index_steps(data).map_err(|e| data_error(e, allowed))
}

fn index_steps(data: &[u8]) -> Result<()> {
    if data.len() < INDEX_HEADER_SIZE {
        assert!(Index::parse(data).is_err(), "a short index parsed");
        return Ok(());
    }
    let header = &data[..INDEX_HEADER_SIZE];
    Index::check_file_len(header, data.len() as u64)?;
    let mut checker = Index::body_checker(header);
    for block in data[INDEX_HEADER_SIZE..].chunks(BLOCK) {
        checker.feed(block)?;
    }
    let idx = Index::parse(data)?;
    let mut end = 0u64;
    for i in 0..idx.chunk_count() {
        let c = idx
            .chunk_info(i)
            .unwrap_or_else(|| panic!("chunk {i} of {} has no info", idx.chunk_count()));
        assert_eq!(
            c.start,
            end,
            "chunk {i} does not start where {} ended",
            i as i64 - 1
        );
        assert!(c.end > c.start, "chunk {i} is empty or reversed: {c:?}");
        end = c.end;
    }
    assert!(
        idx.chunk_info(idx.chunk_count()).is_none(),
        "info past the last chunk"
    );
    assert_eq!(end, idx.size(), "chunks do not add up to the index's size");
    let probes = [0, 1, end / 2, end.saturating_sub(1), end, end + 1, u64::MAX];
    for off in probes {
        match idx.locate(off) {
            Some((i, inside)) => {
                let c = idx.chunk_info(i).expect("located chunk exists");
                assert!(off < end, "offset {off} located past the end {end}");
                assert_eq!(
                    c.start + inside,
                    off,
                    "locate({off}) gave chunk {i} +{inside}"
                );
                assert!(inside < c.len(), "locate({off}) points past chunk {i}");
            }
            None => assert!(off >= end, "offset {off} inside {end} bytes not located"),
        }
    }
    Ok(())
}

/// A manifest's JSON (the `index.json.blob` payload; the blob layer is `blob`'s): parsed
/// as `Datastore::load_manifest_json` does, then everything readers and the mount take
/// from it, then stored (`to_blob`) and read back unchanged, as a notes edit does.
pub fn manifest(data: &[u8]) -> Result<()> {
    let allowed: &[fn(&Error) -> bool] = &[corrupt, invalid_verify_state];
    manifest_steps(data).map_err(|e| data_error(e, allowed))
}

fn manifest_steps(data: &[u8]) -> Result<()> {
    let m = Manifest::from_json(data)?;
    m.backup_time();
    m.notes();
    for f in m.files()? {
        assert!(m.file(&f.filename).is_some(), "listed file {f:?} not found");
    }
    let stored = m.to_blob()?;
    let back = Manifest::from_json(&blob::decode(&stored)?)?;
    assert_eq!(
        back.as_map(),
        m.as_map(),
        "a stored manifest reads back different"
    );
    if let Some(state) = m.verify_state() {
        state?;
    }
    Ok(())
}

/// A catalog stream (`catalog.pcat1.didx`'s content), walked as `pbsfs catalog` and
/// `find` walk it: the root block's archives, then each one's tree.
pub fn catalog(data: &[u8]) -> Result<()> {
    let allowed: &[fn(&Error) -> bool] = &[corrupt];
    catalog_steps(data).map_err(|e| data_error(e, allowed))
}

fn catalog_steps(data: &[u8]) -> Result<()> {
    let cat = CatalogReader::open(data)?;
    let mut visits = 0usize;
    for top in cat.read_dir(cat.root())? {
        let CatalogAttr::Dir { start } = top.attr else {
            continue;
        };
        cat.walk(start, &mut |path, e| {
            visits += 1;
            assert!(visits <= MAX_VISITS, "catalog walk without end");
            assert!(
                !e.name.is_empty() && path.ends_with(&e.name),
                "path {path:?}"
            );
        })?;
    }
    Ok(())
}

/// A single (v1) pxar stream: opened and walked as the mount and `restore` do.
pub fn pxar(data: &[u8]) -> Result<()> {
    let allowed: &[fn(&Error) -> bool] = &[corrupt];
    Archive::open(Bytes(data), None, "fuzz.pxar")
        .and_then(|ar| walk(&ar))
        .map_err(|e| data_error(e, allowed))
}

/// A split pxar archive: metadata (`.mpxar`) and payload (`.ppxar`) stream, given as
/// one input by `split_input`'s layout.
pub fn pxar_split(data: &[u8]) -> Result<()> {
    let allowed: &[fn(&Error) -> bool] = &[corrupt];
    let (meta, payload) = split_input(data);
    Archive::open(Bytes(meta), Some(Bytes(payload)), "fuzz.mpxar")
        .and_then(|ar| walk(&ar))
        .map_err(|e| data_error(e, allowed))
}

/// A borrowed stream: the decoder's `ReadAt` over the input without copying it.
struct Bytes<'a>(&'a [u8]);

impl ReadAt for Bytes<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.0.read_at(offset, buf)
    }
}

/// `pxar_split`'s input: a 4-byte little-endian length of the metadata stream, the
/// metadata stream, then the payload stream (whatever follows). A length past the end
/// takes everything as metadata. `join_split` builds such an input.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(len)
}

/// The input `split_input` splits into `meta` and `payload`.
pub fn join_split(meta: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(meta.len()).expect("metadata stream under 4 GiB");
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(meta);
    out.extend_from_slice(payload);
    out
}

/// Every entry depth first (explicit stack, as `restore` walks): each listed child is
/// found again by `lookup`, each file read to its end, each hardlink resolved. As in the
/// mount, where each request stands alone, an entry that fails does not end the walk
/// (a folder that cannot be listed is skipped); the first error is returned at the end.
fn walk<R: ReadAt>(ar: &Archive<R>) -> Result<()> {
    let root = ar.root()?;
    let mut first: Option<Error> = None;
    let mut keep = |r: Result<()>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    let mut visits = 0usize;
    let mut buf = vec![0u8; BLOCK];
    let mut stack = vec![(root.clone(), ar.list(&root)?.into_iter())];
    while let Some((dir, children)) = stack.last_mut() {
        let Some(child) = children.next() else {
            stack.pop();
            continue;
        };
        visits += 1;
        assert!(visits <= MAX_VISITS, "pxar walk without end");
        keep(ar.lookup(dir, &child.name).map(|found| {
            let found = found.unwrap_or_else(|| panic!("listed {:?} not found", child.name));
            assert_eq!(found.name, child.name, "lookup found another name");
        }));
        match &child.kind {
            EntryKind::Directory(_) => match ar.list(&child) {
                Ok(children) => stack.push((child, children.into_iter())),
                Err(e) => keep(Err(e)),
            },
            EntryKind::File { .. } => keep(read_all(ar, &child, &mut buf)),
            EntryKind::Hardlink { .. } => keep(ar.hardlink_target(&child).and_then(|target| {
                assert!(target.offset < child.offset, "a hardlink points forward");
                read_all(ar, &target, &mut buf)
            })),
            _ => {}
        }
    }
    first.map_or(Ok(()), Err)
}

/// A regular file's content, read to its end in blocks as the mount's reads come.
fn read_all<R: ReadAt>(ar: &Archive<R>, file: &Entry, buf: &mut [u8]) -> Result<()> {
    let c = ar.content(file)?;
    let mut pos = 0u64;
    while pos < c.len() {
        let n = ar.read_content(&c, pos, buf)?;
        assert!(n > 0, "content ends at {pos} of {} bytes", c.len());
        pos += n as u64;
    }
    assert_eq!(
        ar.read_content(&c, pos, buf)?,
        0,
        "content goes on past its length"
    );
    Ok(())
}

/// A task id (a manifest's `verify_state.upid`, a gc status): parsed as `verify` and
/// `gc` parse it, and printed back to the same value. Task ids live in JSON strings,
/// so inputs that are not UTF-8 are not this target's.
pub fn upid(data: &[u8]) -> Result<()> {
    let Ok(s) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let u = Upid::parse(s).map_err(|e| data_error(e, &[invalid_input]))?;
    let again = Upid::parse(&u.to_string()).expect("a printed UPID parses");
    assert_eq!(again, u, "a UPID changed when printed and parsed again");
    Ok(())
}
