//! `pbsfs namespaces`: the namespace tree with its groups and snapshots counted (text:
//! an indented tree; JSON: a flat list with PBS's `ns`), and the note `snapshots` and
//! `groups` print on stderr when namespaces they do not list hold snapshots.
//!
//! Counting reads folder listings and stats one manifest per snapshot (it exists or
//! not): no manifest is decoded, so it stays cheap on a store of many snapshots.

use std::path::Path;

use serde_json::{json, Value};

use crate::cli::NamespacesArgs;
use crate::store::format::names::BackupNamespace;
use crate::store::Datastore;
use crate::util::error::{exit, Error, Result};

/// Namespaces named in the note before it says "and N more".
const NOTE_NAMES: usize = 5;

/// One namespace, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub ns: BackupNamespace,
    /// Group folders directly in it (not in its children).
    pub groups: usize,
    /// Their finished snapshots (with `unfinished`, also those still being written).
    pub snapshots: usize,
}

/// Count the groups and snapshots of `ns` alone. A group or namespace that vanishes
/// meanwhile (a concurrent prune or forget) counts as empty, not as an error: the count
/// is a moment's, like any listing.
pub fn count(ds: &Datastore, ns: &BackupNamespace, unfinished: bool) -> Result<Counted> {
    let vanished = |e: &Error| matches!(e.kind(), Error::NotFound { .. });
    let groups = match ds.list_groups(ns) {
        Ok(g) => g,
        Err(e) if vanished(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut snapshots = 0;
    for g in &groups {
        match ds.list_snapshots(g) {
            Ok(v) => snapshots += v.iter().filter(|s| unfinished || s.finished).count(),
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Counted {
        ns: ns.clone(),
        groups: groups.len(),
        snapshots,
    })
}

/// `parent` and the namespaces below it, at most `max_depth` levels down, each right
/// before its children (the components' order).
fn subtree(
    ds: &Datastore,
    parent: &BackupNamespace,
    max_depth: Option<usize>,
) -> Result<Vec<BackupNamespace>> {
    if !parent.is_root() && !ds.fs().is_dir(&ds.ns_path(parent)) {
        return Err(Error::not_found(format!("namespace '{parent}'")));
    }
    let mut out = ds.list_namespaces_below(parent, max_depth)?;
    out.sort();
    Ok(out)
}

/// PBS's `ns` (empty for the root) and pbsfs's counts.
fn ns_json(c: &Counted) -> Value {
    json!({
        "ns": c.ns.to_string(),
        "depth": c.ns.depth(),
        "group-count": c.groups,
        "snapshot-count": c.snapshots,
    })
}

/// The tree's lines: the top namespace by its full name (the root as `/`), each one
/// below by its last component, indented two spaces per level below the top.
fn tree_lines(rows: &[Counted], top: &BackupNamespace) -> Vec<String> {
    let labels: Vec<String> = rows
        .iter()
        .map(|c| {
            if c.ns == *top {
                if top.is_root() {
                    "/".to_string()
                } else {
                    top.to_string()
                }
            } else {
                let indent = "  ".repeat(c.ns.depth() - top.depth());
                let last = c.ns.components().last().map_or("", String::as_str);
                format!("{indent}{last}")
            }
        })
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(0);
    rows.iter()
        .zip(&labels)
        .map(|(c, label)| {
            format!(
                "{label:<width$}  {}, {}",
                crate::util::count(c.groups as u64, "group"),
                crate::util::count(c.snapshots as u64, "snapshot")
            )
        })
        .collect()
}

pub fn run(args: &NamespacesArgs, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(&args.store, pbs)?;
    let top = super::parse_ns(args.ns.as_deref())?;
    let mut rows = Vec::new();
    for ns in subtree(&ds, &top, args.max_depth)? {
        rows.push(count(&ds, &ns, false)?);
    }
    if args.output_format.is_json() {
        let list: Vec<Value> = rows.iter().map(ns_json).collect();
        super::output::print_json(&list, args.output_format)?;
    } else {
        for line in tree_lines(&rows, &top) {
            println!("{line}");
        }
    }
    Ok(exit::OK)
}

/// The note for a listing of the root namespace (no `--ns`) when other namespaces hold
/// snapshots (finished ones; with `unfinished`, all), or `None`. `root_empty`: the
/// listing showed nothing, so the note says that first. A store that cannot be walked
/// gives no note: the note must never fail the listing it follows.
pub fn other_namespaces_note(
    ds: &Datastore,
    store: &Path,
    unfinished: bool,
    root_empty: bool,
) -> Option<String> {
    let walk = || -> Result<Vec<Counted>> {
        let mut found = Vec::new();
        for ns in ds.list_all_namespaces()? {
            if ns.is_root() {
                continue;
            }
            let c = count(ds, &ns, unfinished)?;
            if c.snapshots > 0 {
                found.push(c);
            }
        }
        found.sort_by(|a, b| a.ns.cmp(&b.ns));
        Ok(found)
    };
    let found = match walk() {
        Ok(f) => f,
        Err(e) => {
            log::debug!("no note on other namespaces: {e}");
            return None;
        }
    };
    if found.is_empty() {
        return None;
    }
    let total: usize = found.iter().map(|c| c.snapshots).sum();
    let mut names: Vec<String> = found
        .iter()
        .take(NOTE_NAMES)
        .map(|c| c.ns.to_string())
        .collect();
    if found.len() > NOTE_NAMES {
        names.push(format!("and {} more", found.len() - NOTE_NAMES));
    }
    let spaces = crate::util::count(found.len() as u64, "other namespace");
    let (snaps, names) = (
        crate::util::count(total as u64, "snapshot"),
        names.join(", "),
    );
    let what = if root_empty {
        let hold = if found.len() == 1 { "holds" } else { "hold" };
        format!("the root namespace has no snapshots, but {spaces} {hold} {snaps} ({names})")
    } else {
        format!("{snaps} in {spaces} ({names}) not shown")
    };
    Some(format!(
        "{what}; see `pbsfs namespaces {}`, or pass --ns NS",
        store.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ns: &str, groups: usize, snapshots: usize) -> Counted {
        Counted {
            ns: BackupNamespace::parse(ns).unwrap(),
            groups,
            snapshots,
        }
    }

    #[test]
    fn the_tree_indents_by_depth_below_its_top() {
        let rows = [c("", 2, 5), c("a", 1, 1), c("a/b", 0, 0), c("c", 1, 2)];
        assert_eq!(
            tree_lines(&rows, &BackupNamespace::root()),
            [
                "/      2 groups, 5 snapshots",
                "  a    1 group, 1 snapshot",
                "    b  0 groups, 0 snapshots",
                "  c    1 group, 2 snapshots",
            ]
        );
        let top = BackupNamespace::parse("a").unwrap();
        assert_eq!(
            tree_lines(&rows[1..3], &top),
            ["a    1 group, 1 snapshot", "  b  0 groups, 0 snapshots"]
        );
    }
}
