//! `pbsfs find`: which snapshots hold a path matching a shell glob, from their catalogs
//! (or metadata streams) through `catalog::walk_snapshot`: no file content is read.
//! Exit codes as grep's: 0 something matched, 1 nothing did, 2 an error (a damaged
//! snapshot is reported and the search goes on; the exit code says so at the end).

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use serde_json::Value;

use super::catalog::{item_json, walk_snapshot, Item};
use super::output::JsonArray;
use crate::cli::FindArgs;
use crate::store::chunks::cache::ChunkCache;
use crate::store::format::names::{BackupDir, BackupGroup};
use crate::store::Datastore;
use crate::util::error::{exit, Error, IoContext, Result};
use crate::util::glob::Glob;

/// grep's "no line selected".
pub const NO_MATCH: i32 = 1;

/// PATTERN as `find` applies it.
#[derive(Debug)]
pub struct Matcher {
    glob: Glob,
    /// The pattern holds a `/`: it is matched against the whole path inside the
    /// archive, else against the entry's name.
    whole_path: bool,
    /// A trailing `/`: directories only.
    dir_only: bool,
}

impl Matcher {
    pub fn new(pattern: &[u8], ignore_case: bool) -> Result<Matcher> {
        let whole_path = pattern.contains(&b'/');
        let dir_only = whole_path && pattern.ends_with(b"/");
        // Paths inside an archive are matched without their leading `/`.
        let start = pattern.iter().position(|b| *b != b'/');
        let end = pattern.iter().rposition(|b| *b != b'/');
        let body = match (start, end) {
            (Some(s), Some(e)) => &pattern[s..=e],
            _ => {
                return Err(Error::invalid(
                    format!("pattern {:?}", String::from_utf8_lossy(pattern)),
                    "names no entry: the archive root itself is never matched",
                ))
            }
        };
        Ok(Matcher {
            glob: Glob::new(body, ignore_case)?,
            whole_path,
            dir_only,
        })
    }

    pub fn matches(&self, item: &Item) -> bool {
        // The archive itself (path "/") is no path inside it.
        if item.path.is_empty() || (self.dir_only && item.ty != b'd') {
            return false;
        }
        let text = if self.whole_path {
            item.path
        } else {
            let at = item.path.iter().rposition(|b| *b == b'/');
            &item.path[at.map_or(0, |i| i + 1)..]
        };
        self.glob.matches(text)
    }
}

/// `TYPE/ID/TIME`: the snapshot as `--ns` plus SNAPSHOT name it.
fn snapshot_name(d: &BackupDir) -> String {
    format!("{}/{}/{}", d.group.ty.as_str(), d.group.id, d.time_string())
}

/// A path for a text line: as it is when it is UTF-8 without control characters (it
/// starts with `/`), else quoted and escaped as Rust's `{:?}` does (it starts with `"`),
/// so one match is always one line.
pub(crate) fn shown_path(p: &[u8]) -> String {
    match std::str::from_utf8(p) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => format!("{:?}", std::path::Path::new(std::ffi::OsStr::from_bytes(p))),
    }
}

struct Search<'a> {
    ds: &'a Datastore,
    matcher: Matcher,
    cache: Arc<ChunkCache>,
    /// The JSON list being streamed; `None`: text lines.
    array: Option<JsonArray>,
    matches: u64,
    errors: u64,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Search<'_> {
    fn snapshot(&mut self, d: &BackupDir) -> Result<()> {
        let _lock = self.ds.locker().lock_snapshot_shared(d)?;
        let m = self.ds.load_manifest(d)?;
        let name = snapshot_name(d);
        let (matcher, array, out, count) = (
            &self.matcher,
            &mut self.array,
            &mut self.out,
            &mut self.matches,
        );
        walk_snapshot(self.ds, d, &m, None, &self.cache, &mut |item| {
            if !matcher.matches(item) {
                return Ok(());
            }
            let mut path = b"/".to_vec();
            path.extend_from_slice(item.path);
            if let Some(array) = array {
                let mut v = item_json(item);
                v["path"] = Value::from(String::from_utf8_lossy(&path));
                v["archive"] = Value::from(item.archive);
                v["snapshot"] = Value::from(name.as_str());
                if !d.group.ns.is_root() {
                    v["ns"] = Value::from(d.group.ns.to_string());
                }
                array.push(out, &v)?;
            } else {
                writeln!(out, "{name} {} {}", item.archive, shown_path(&path)).ctx("stdout")?;
            }
            *count += 1;
            Ok(())
        })
    }

    /// Report a failure and go on: the exit code tells at the end.
    fn report(&mut self, e: &Error) {
        // What was found before goes out first, so the report follows it.
        let _ = self.out.flush();
        eprintln!("pbsfs: error: {e}");
        self.errors += 1;
    }
}

pub fn run(args: &FindArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let ns = super::parse_ns(args.ns.as_deref())?;
    let matcher = Matcher::new(args.pattern().as_bytes(), args.ignore_case)?;
    let groups = match args.group() {
        Some(g) => {
            let g = BackupGroup::parse(&ns, &g)?;
            // A group named on the command line must exist: a typo is no "no match".
            ds.list_snapshots(&g)?;
            vec![g]
        }
        None => ds.list_groups(&ns)?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let array = JsonArray::for_format(&mut out, args.output_format)?;
    let mut s = Search {
        ds: &ds,
        matcher,
        cache: Arc::new(ChunkCache::new(16 << 20)),
        array,
        matches: 0,
        errors: 0,
        out,
    };
    for g in &groups {
        let snaps = match ds.list_snapshots(g) {
            Ok(v) => v,
            Err(e) => {
                s.report(&e.context(format!("group {g}")));
                continue;
            }
        };
        // Unfinished snapshots (a running backup) have nothing to search yet.
        for info in snaps.iter().filter(|i| i.finished) {
            if let Err(e) = s.snapshot(&info.dir) {
                s.report(&e.context(format!("snapshot {}", info.dir)));
            }
        }
    }
    if let Some(a) = s.array.take() {
        a.finish(&mut s.out)?;
    }
    s.out.flush().ctx("stdout")?;
    Ok(if s.errors > 0 {
        exit::FAILURE
    } else if s.matches > 0 {
        exit::OK
    } else {
        NO_MATCH
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(path: &'a [u8], ty: u8) -> Item<'a> {
        Item {
            archive: "root.pxar.didx",
            path,
            ty,
            file: None,
        }
    }

    fn m(p: &str, path: &str, ty: u8) -> bool {
        Matcher::new(p.as_bytes(), false)
            .unwrap()
            .matches(&item(path.as_bytes(), ty))
    }

    #[test]
    fn names_without_a_slash_paths_with_one() {
        assert!(m("hostname", "etc/hostname", b'f') && m("hostname", "hostname", b'f'));
        assert!(
            !m("etc", "etc/hostname", b'f'),
            "a name pattern is not a prefix"
        );
        assert!(m("etc/hostname", "etc/hostname", b'f'));
        assert!(
            m("/etc/hostname", "etc/hostname", b'f'),
            "leading / optional"
        );
        assert!(
            !m("/hostname", "etc/hostname", b'f'),
            "a path anchors at the root"
        );
        assert!(m("etc/*", "etc/hostname", b'f') && !m("etc/*", "etc/ssh/x", b'f'));
        assert!(m("**/x", "etc/ssh/x", b'f'));
    }

    #[test]
    fn a_trailing_slash_means_directories_and_the_root_never_matches() {
        assert!(m("etc/", "etc", b'd') && !m("etc/", "etc", b'f'));
        assert!(!m("*", "", b'd'), "the archive root");
        for bad in ["/", "//", ""] {
            assert!(Matcher::new(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_paths_stay_one_line() {
        assert_eq!(shown_path(b"/etc/host name"), "/etc/host name");
        assert_eq!(shown_path(b"/a\nb"), "\"/a\\nb\"");
        assert_eq!(shown_path(b"/bad\xff"), "\"/bad\\xFF\"");
    }
}
