//! `pbsfs catalog`: a snapshot's pxar entries, printed as `proxmox-backup-client catalog
//! dump` prints them; and `walk_snapshot`, the walk it shares with `pbsfs find`. Entries
//! come from the snapshot's catalog (`catalog.pcat1.didx`) for the archives it lists,
//! and from the metadata stream of every other pxar archive (a split archive's
//! `NAME.mpxar.didx` has no catalog): only metadata is decoded there, and a split
//! archive's payload stream is never even opened.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::output::JsonArray;
use crate::cli::CatalogArgs;
use crate::pxar::catalog::{CatalogAttr, CatalogReader};
use crate::pxar::decoder::{Archive, Entry, EntryKind};
use crate::pxar::format::{S_IFBLK, S_IFMT};
use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::{ArchiveData, IndexReader};
use crate::store::format::archive::{ArchiveKind, ArchiveName};
use crate::store::format::manifest::Manifest;
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::error::{exit, Error, IoContext, Result};

/// One entry of a snapshot's pxar archives.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The archive's file name as the catalog names it (`root.pxar.didx`), or, for an
    /// archive walked without catalog, its metadata stream's (`root.mpxar.didx`).
    pub archive: &'a str,
    /// The path inside the archive without a leading `/`; empty for the archive root.
    pub path: &'a [u8],
    /// The catalog's type letter: `d f l h b c p s`.
    pub ty: u8,
    /// Size and mtime (seconds): regular files only, as the catalog records them.
    pub file: Option<(u64, i64)>,
}

impl Item<'_> {
    /// The path as PBS's API shows it (`filepath` of its catalog listing, decoded):
    /// `/ARCHIVE/PATH`.
    pub fn api_path(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.archive.len() + self.path.len() + 2);
        p.push(b'/');
        p.extend_from_slice(self.archive.as_bytes());
        if !self.path.is_empty() {
            p.push(b'/');
            p.extend_from_slice(self.path);
        }
        p
    }
}

fn catalog_type(a: &CatalogAttr) -> (u8, Option<(u64, i64)>) {
    let file = match a {
        CatalogAttr::File { size, mtime } => Some((*size, *mtime)),
        _ => None,
    };
    (a.type_byte(), file)
}

/// The catalog letter of a decoded entry (a hardlink is `h`, as the catalog writer
/// records it, whatever it points to).
fn entry_type(e: &Entry) -> (u8, Option<(u64, i64)>) {
    match &e.kind {
        EntryKind::Directory(_) => (b'd', None),
        EntryKind::File { size, .. } => (b'f', Some((*size, e.stat.mtime_secs))),
        EntryKind::Symlink { .. } => (b'l', None),
        EntryKind::Hardlink { .. } => (b'h', None),
        EntryKind::Device { .. } if e.stat.mode & S_IFMT == S_IFBLK => (b'b', None),
        EntryKind::Device { .. } => (b'c', None),
        EntryKind::Fifo => (b'p', None),
        EntryKind::Socket => (b's', None),
    }
}

fn open_index(
    ds: &Datastore,
    d: &BackupDir,
    m: &Manifest,
    name: &ArchiveName,
    cache: &Arc<ChunkCache>,
) -> Result<IndexReader> {
    match ds.open_archive(d, m, name, cache.clone())? {
        ArchiveData::Index(r) => Ok(*r),
        ArchiveData::Blob(_) => Err(Error::invalid(format!("{d}/{name}"), "not an index")),
    }
}

/// Every entry of snapshot `d`'s pxar archives (or of `only`), depth first, each
/// directory before its children: first what the catalog lists (in its order), then
/// each pxar archive it does not list, by name. `f` may stop the walk with an error.
pub fn walk_snapshot(
    ds: &Datastore,
    d: &BackupDir,
    m: &Manifest,
    only: Option<&ArchiveName>,
    cache: &Arc<ChunkCache>,
    f: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    let mut names = Vec::new();
    for file in m.files()? {
        names.push(ArchiveName::parse(&file.filename)?);
    }
    names.sort_by(|a, b| a.file().cmp(b.file()));
    let mut covered = Vec::new();
    if let Some(cat) = names.iter().find(|n| n.kind() == ArchiveKind::Catalog) {
        let what = format!("{d}/{cat}");
        let data = open_index(ds, d, m, cat, cache)?;
        // The reader names its format errors `catalog`: say which one. Errors of the
        // chunks below already name the file (the `IndexReader`'s context).
        walk_catalog(&data, only, &mut covered, f).map_err(|e| match &e {
            Error::Corrupt { what: w, .. } if w == "catalog" => e.context(&what),
            _ => e,
        })?;
    }
    for name in &names {
        let pxar = matches!(name.kind(), ArchiveKind::Pxar | ArchiveKind::SplitMeta);
        if !pxar || covered.iter().any(|c| c == name.file()) || only.is_some_and(|o| o != name) {
            continue;
        }
        walk_pxar(ds, d, m, name, cache, f)?;
    }
    Ok(())
}

/// The catalog's archives (those named `only`, when given): their names go to
/// `covered` whether walked or not.
fn walk_catalog(
    data: &IndexReader,
    only: Option<&ArchiveName>,
    covered: &mut Vec<String>,
    f: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    let cat = CatalogReader::open(data)?;
    for top in cat.read_dir(cat.root())? {
        let archive = String::from_utf8_lossy(&top.name).into_owned();
        covered.push(archive.clone());
        if only.is_some_and(|o| o.file() != archive) {
            continue;
        }
        let (ty, file) = catalog_type(&top.attr);
        f(&Item {
            archive: &archive,
            path: b"",
            ty,
            file,
        })?;
        let CatalogAttr::Dir { start } = top.attr else {
            continue;
        };
        // `walk` takes a callback that cannot fail: the first error of `f` is kept and
        // the rest of the walk skipped.
        let mut failed = None;
        cat.walk(start, &mut |path, e| {
            if failed.is_none() {
                let (ty, file) = catalog_type(&e.attr);
                let item = Item {
                    archive: &archive,
                    path,
                    ty,
                    file,
                };
                failed = f(&item).err();
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// A pxar archive without catalog, from its metadata stream alone (a single stream's
/// file contents lie inline between the headers; only the headers are decoded).
fn walk_pxar(
    ds: &Datastore,
    d: &BackupDir,
    m: &Manifest,
    name: &ArchiveName,
    cache: &Arc<ChunkCache>,
    f: &mut dyn FnMut(&Item) -> Result<()>,
) -> Result<()> {
    // Not `open_pxar`: a split archive's payload index is not needed to list it.
    let meta = open_index(ds, d, m, name, cache)?;
    let ar = Archive::open(meta, None, format!("{d}/{name}"))?;
    let archive = name.file();
    let root = ar.root()?;
    let (ty, file) = entry_type(&root);
    f(&Item {
        archive,
        path: b"",
        ty,
        file,
    })?;
    // Children lie strictly inside their parent, so the walk cannot cycle.
    crate::util::walk::walk_tree(
        ar.list(&root)?.into_iter(),
        entry_name,
        |e| {
            Ok(if e.is_dir() {
                Some(ar.list(e)?.into_iter())
            } else {
                None
            })
        },
        |path, e| {
            let (ty, file) = entry_type(e);
            f(&Item {
                archive,
                path,
                ty,
                file,
            })
        },
    )
}

fn entry_name(e: &crate::pxar::decoder::Entry) -> &[u8] {
    &e.name
}

/// One line of upstream's dump (`CatalogReader::dump_dir` in pbs-datastore): the type
/// letter, the path as Rust's `{:?}` of a `Path` prints it (quoted, escaped; upstream's
/// prefix `./`), and for files the size and mtime. Deviation: upstream formats the
/// mtime as local time followed by a literal `Z` (`strftime_local("%FT%TZ")`), which is
/// wrong outside UTC; this prints UTC, so the `Z` holds. Like upstream, an mtime
/// outside years 0..=9999 is printed as its number of seconds.
pub fn dump_line(out: &mut impl Write, item: &Item) -> std::io::Result<()> {
    let mut path = b"./".to_vec();
    path.extend_from_slice(item.archive.as_bytes());
    if !item.path.is_empty() {
        path.push(b'/');
        path.extend_from_slice(item.path);
    }
    let shown = Path::new(OsStr::from_bytes(&path));
    let ty = item.ty as char;
    match item.file {
        Some((size, mtime)) => {
            let t = crate::util::time::format_utc(mtime).unwrap_or_else(|| mtime.to_string());
            writeln!(out, "{ty} {shown:?} {size} {t}")
        }
        None => writeln!(out, "{ty} {shown:?}"),
    }
}

/// The JSON object of an entry: `type`, `path` (`/ARCHIVE/PATH`, as PBS's API; names
/// that are not UTF-8 with U+FFFD for their bad bytes), for files `size` and `mtime`
/// (epoch seconds).
pub fn item_json(item: &Item) -> Value {
    let mut v = json!({
        "type": (item.ty as char).to_string(),
        "path": String::from_utf8_lossy(&item.api_path()),
    });
    if let Some((size, mtime)) = item.file {
        v["size"] = Value::from(size);
        v["mtime"] = Value::from(mtime);
    }
    v
}

pub fn run(args: &CatalogArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let d = super::resolve_snapshot(&ds, &ns, &args.snapshot)?;
    let _lock = ds.locker().lock_snapshot_shared(&d)?;
    let m = ds.load_manifest(&d)?;
    let only = match &args.archive {
        None => None,
        Some(a) => {
            let name = super::resolve_archive(&ds, &d, &m, a)?;
            if !matches!(name.kind(), ArchiveKind::Pxar | ArchiveKind::SplitMeta) {
                return Err(Error::invalid(
                    format!("archive {d}/{name}"),
                    "not a pxar archive: it has no entries to list",
                ));
            }
            Some(name)
        }
    };
    let listable = m.files()?.iter().any(|f| {
        ArchiveKind::of_file(&f.filename).is_some_and(|k| {
            matches!(
                k,
                ArchiveKind::Catalog | ArchiveKind::Pxar | ArchiveKind::SplitMeta
            )
        })
    });
    if !listable {
        return Err(Error::not_found(format!(
            "a catalog or pxar archive in snapshot {d}"
        )));
    }
    let cache = Arc::new(ChunkCache::new(16 << 20));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut array = JsonArray::for_format(&mut out, args.output_format)?;
    walk_snapshot(
        &ds,
        &d,
        &m,
        only.as_ref(),
        &cache,
        &mut |item| match &mut array {
            Some(a) => a.push(&mut out, &item_json(item)),
            None => dump_line(&mut out, item).ctx("stdout"),
        },
    )?;
    if let Some(a) = array {
        a.finish(&mut out)?;
    }
    out.flush().ctx("stdout")?;
    Ok(exit::OK)
}
