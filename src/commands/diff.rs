//! `pbsfs diff`: the paths added, removed and changed between two snapshots' pxar
//! archives, and what changed, in restic's style: `+` added, `-` removed, `M` content
//! changed, `U` metadata only, `T` type changed; one line per path, prefixed with the
//! archive's name (`root.pxar/etc/hostname`, directories with a trailing `/`).
//!
//! Both trees are walked in lock-step, by sorted name, from the metadata streams alone
//! (a split archive's payload stream is never opened; a single stream's file contents,
//! lying between the headers, are never read). A regular file's content counts as
//! changed when its size or mtime (with nanoseconds) differs; equal size and mtime are
//! taken as unchanged content, as PBS's `metadata` change detection takes them, so no
//! payload byte is ever compared. A directory's mtime is not reported: it moves whenever
//! a child is added or removed, and those children are listed themselves.
//! Exit codes as restic's: 0 whether or not there are differences, 2 on errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::iter::Peekable;
use std::sync::Arc;
use std::vec::IntoIter;

use serde_json::json;

use super::find::shown_path;
use super::output::JsonArray;
use crate::cli::DiffArgs;
use crate::pxar::decoder::{Archive, Entry, EntryKind};
use crate::pxar::format::{S_IFBLK, S_IFMT};
use crate::store::chunks::cache::ChunkCache;
use crate::store::chunks::reader::{ArchiveData, IndexReader};
use crate::store::format::archive::ArchiveName;
use crate::store::format::manifest::Manifest;
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::error::{exit, Error, IoContext, Result};

/// How a path differs between snapshot A and snapshot B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// Content (a file's bytes, a symlink's or hardlink's target, a device number).
    Modified,
    /// Metadata only.
    Metadata,
    /// A different file type.
    Type,
}

impl Change {
    pub fn marker(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
            Change::Type => 'T',
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::Metadata => "metadata",
            Change::Type => "type",
        }
    }
}

/// The file type of an entry as the catalog letters it (a hardlink is its own type).
fn type_letter(e: &Entry) -> u8 {
    match &e.kind {
        EntryKind::Directory(_) => b'd',
        EntryKind::File { .. } => b'f',
        EntryKind::Symlink { .. } => b'l',
        EntryKind::Hardlink { .. } => b'h',
        EntryKind::Device { .. } if e.stat.mode & S_IFMT == S_IFBLK => b'b',
        EntryKind::Device { .. } => b'c',
        EntryKind::Fifo => b'p',
        EntryKind::Socket => b's',
    }
}

/// How `b` differs from `a` at the same path, and what differs; `None`: not at all.
/// Decided from the decoded metadata alone (see the module comment for content).
pub fn compare(a: &Entry, b: &Entry) -> Option<(Change, Vec<&'static str>)> {
    if type_letter(a) != type_letter(b) {
        return Some((Change::Type, vec!["type"]));
    }
    let mtime = |e: &Entry| (e.stat.mtime_secs, e.stat.mtime_nanos);
    let mut what = Vec::new();
    match (&a.kind, &b.kind) {
        (EntryKind::File { size: sa, .. }, EntryKind::File { size: sb, .. })
            if sa != sb || mtime(a) != mtime(b) =>
        {
            what.push("content")
        }
        (EntryKind::Symlink { target: ta }, EntryKind::Symlink { target: tb }) if ta != tb => {
            what.push("target")
        }
        (
            EntryKind::Hardlink {
                target_path: ta, ..
            },
            EntryKind::Hardlink {
                target_path: tb, ..
            },
        ) if ta != tb => what.push("target"),
        (
            EntryKind::Device {
                major: ma,
                minor: na,
            },
            EntryKind::Device {
                major: mb,
                minor: nb,
            },
        ) if (ma, na) != (mb, nb) => what.push("device"),
        _ => {}
    }
    let content = !what.is_empty();
    if (a.stat.mode & !S_IFMT, a.stat.flags) != (b.stat.mode & !S_IFMT, b.stat.flags) {
        what.push("mode");
    }
    if (a.stat.uid, a.stat.gid) != (b.stat.uid, b.stat.gid) {
        what.push("owner");
    }
    if !a.is_dir() && mtime(a) != mtime(b) {
        what.push("times");
    }
    let sorted = |e: &Entry| {
        let mut x = e.xattrs.clone();
        x.sort();
        x
    };
    if sorted(a) != sorted(b) {
        what.push("xattrs");
    }
    if a.acl != b.acl {
        what.push("acl");
    }
    if a.fcaps != b.fcaps {
        what.push("fcaps");
    }
    if a.quota_projid != b.quota_projid {
        what.push("quota");
    }
    match (what.is_empty(), content) {
        (true, _) => None,
        (false, true) => Some((Change::Modified, what)),
        (false, false) => Some((Change::Metadata, what)),
    }
}

/// The printer: text lines or a streamed JSON array.
struct Printer {
    array: Option<JsonArray>,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Printer {
    fn emit(&mut self, path: &[u8], change: Change, what: &[&str]) -> Result<()> {
        match &mut self.array {
            Some(a) => {
                let v = json!({
                    "path": String::from_utf8_lossy(path),
                    "change": change.word(),
                    "what": what,
                });
                a.push(&mut self.out, &v)
            }
            None => writeln!(self.out, "{}    {}", change.marker(), shown_path(path)).ctx("stdout"),
        }
    }
}

/// `PREFIX/NAME`, with a trailing `/` for a directory (as restic shows them).
fn child_path(prefix: &[u8], e: &Entry) -> Vec<u8> {
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(&e.name);
    p
}

fn shown(path: &[u8], e: &Entry) -> Vec<u8> {
    let mut p = path.to_vec();
    if e.is_dir() {
        p.push(b'/');
    }
    p
}

/// The line for `path`: `x` as snapshot A has it, `y` as B has it (`None`: absent).
fn report(p: &mut Printer, path: &[u8], x: Option<&Entry>, y: Option<&Entry>) -> Result<()> {
    match (x, y) {
        (Some(x), None) => p.emit(&shown(path, x), Change::Removed, &[]),
        (None, Some(y)) => p.emit(&shown(path, y), Change::Added, &[]),
        (Some(x), Some(y)) => match compare(x, y) {
            Some((c, what)) => p.emit(&shown(path, y), c, &what),
            None => Ok(()),
        },
        (None, None) => Ok(()),
    }
}

type Side = Peekable<IntoIter<Entry>>;

/// One directory being compared: its path and both sides' children (one side empty
/// below a directory only one snapshot has).
struct Frame {
    path: Vec<u8>,
    a: Side,
    b: Side,
}

/// Walk both trees from their roots in lock-step (an explicit stack: depth is bounded
/// by the archives, not the thread's stack; children lie strictly inside their parent,
/// so no walk cycles). `None` is an archive only the other snapshot has.
fn diff_trees(
    name: &str,
    a: Option<&Archive<IndexReader>>,
    b: Option<&Archive<IndexReader>>,
    p: &mut Printer,
) -> Result<()> {
    let none = || Vec::new().into_iter().peekable();
    let list = |ar: Option<&Archive<IndexReader>>, e: &Entry| -> Result<Side> {
        match ar {
            Some(ar) if e.is_dir() => Ok(ar.list(e)?.into_iter().peekable()),
            _ => Ok(none()),
        }
    };
    let root = name.as_bytes().to_vec();
    let (ra, rb) = (
        a.map(Archive::root).transpose()?,
        b.map(Archive::root).transpose()?,
    );
    if ra.is_none() && rb.is_none() {
        return Ok(());
    }
    report(p, &root, ra.as_ref(), rb.as_ref())?;
    let mut stack = vec![Frame {
        a: match &ra {
            Some(e) => list(a, e)?,
            None => none(),
        },
        b: match &rb {
            Some(e) => list(b, e)?,
            None => none(),
        },
        path: root,
    }];
    while let Some(f) = stack.last_mut() {
        let order = match (f.a.peek(), f.b.peek()) {
            (None, None) => {
                stack.pop();
                continue;
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        let (ea, eb) = match order {
            std::cmp::Ordering::Less => (f.a.next(), None),
            std::cmp::Ordering::Greater => (None, f.b.next()),
            std::cmp::Ordering::Equal => (f.a.next(), f.b.next()),
        };
        let any = ea.as_ref().or(eb.as_ref()).expect("one side has an entry");
        let path = child_path(&f.path, any);
        report(p, &path, ea.as_ref(), eb.as_ref())?;
        // Below a directory only one side has (or whose type changed), every entry is
        // added or removed.
        let sa = match &ea {
            Some(e) => list(a, e)?,
            None => none(),
        };
        let sb = match &eb {
            Some(e) => list(b, e)?,
            None => none(),
        };
        if sa.len() + sb.len() > 0 {
            stack.push(Frame { path, a: sa, b: sb });
        }
    }
    Ok(())
}

/// The pxar archives of a manifest by the name they show as (`root.pxar`, whichever
/// layout).
fn pxar_archives(m: &Manifest) -> Result<BTreeMap<String, ArchiveName>> {
    let mut out = BTreeMap::new();
    for f in m.files()? {
        let name = ArchiveName::parse(&f.filename)?;
        if let Some(folder) = name.pxar_folder() {
            out.insert(folder, name);
        }
    }
    Ok(out)
}

/// The folder name (`root.pxar`) of the pxar archive the user named in manifest `m`
/// (`root.pxar`, `root.pxar.didx`, `root.mpxar.didx`), if it has it.
fn named_folder(m: &Manifest, name: &str) -> Result<Option<String>> {
    let files: Vec<String> = m.files()?.into_iter().map(|f| f.filename).collect();
    match ArchiveName::resolve(name, files.iter().map(String::as_str)) {
        Some(file) => Ok(ArchiveName::parse(&file)?.pxar_folder()),
        None => Ok(None),
    }
}

/// The metadata stream alone (a split archive's payload stream is not needed to list
/// it, and not opened).
fn open(
    ds: &Datastore,
    d: &BackupDir,
    m: &Manifest,
    name: &ArchiveName,
    cache: &Arc<ChunkCache>,
) -> Result<Archive<IndexReader>> {
    match ds.open_archive(d, m, name, cache.clone())? {
        ArchiveData::Index(r) => Archive::open(*r, None, format!("{d}/{name}")),
        ArchiveData::Blob(_) => Err(Error::invalid(format!("{d}/{name}"), "not an index")),
    }
}

fn diff(args: &DiffArgs, pbs: Option<&str>, p: &mut Printer) -> Result<()> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let da = super::resolve_snapshot(&ds, &ns, &args.snapshot_a)?;
    let db = super::resolve_snapshot(&ds, &ns, &args.snapshot_b)?;
    let _la = ds.locker().lock_snapshot_shared(&da)?;
    let _lb = ds.locker().lock_snapshot_shared(&db)?;
    let (ma, mb) = (ds.load_manifest(&da)?, ds.load_manifest(&db)?);
    let (mut aa, mut ab) = (pxar_archives(&ma)?, pxar_archives(&mb)?);
    if let Some(name) = args.archive.as_deref() {
        // Named in either snapshot's layout, it is the same archive in both.
        let folder = match named_folder(&ma, name)? {
            Some(f) => f,
            None => named_folder(&mb, name)?.ok_or_else(|| {
                Error::not_found(format!("pxar archive '{name}' in snapshot {da} or {db}"))
            })?,
        };
        aa.retain(|k, _| *k == folder);
        ab.retain(|k, _| *k == folder);
    }
    let mut names: Vec<&String> = aa.keys().chain(ab.keys()).collect();
    names.sort();
    names.dedup();
    let cache = Arc::new(ChunkCache::new(16 << 20));
    for name in names {
        let a = match aa.get(name) {
            Some(n) => Some(open(&ds, &da, &ma, n, &cache)?),
            None => None,
        };
        let b = match ab.get(name) {
            Some(n) => Some(open(&ds, &db, &mb, n, &cache)?),
            None => None,
        };
        diff_trees(name, a.as_ref(), b.as_ref(), p)?;
    }
    Ok(())
}

pub fn run(args: &DiffArgs, pbs: Option<&str>) -> Result<i32> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let array = JsonArray::for_format(&mut out, args.output_format)?;
    let mut p = Printer { array, out };
    if let Err(e) = diff(args, pbs, &mut p) {
        // What was printed before goes out first; the error's kind picks the exit code
        // (util::error's one mapping), like every other command's.
        let _ = p.out.flush();
        return Err(e);
    }
    if let Some(a) = p.array.take() {
        a.finish(&mut p.out)?;
    }
    p.out.flush().ctx("stdout")?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_stay_one_line() {
        assert_eq!(shown_path(b"root.pxar/a b"), "root.pxar/a b");
        assert_eq!(shown_path(b"root.pxar/a\nb"), "\"root.pxar/a\\nb\"");
        assert_eq!(Change::Metadata.marker(), 'U');
    }
}
