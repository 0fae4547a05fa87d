//! One READDIRPLUS answers for a whole folder: its listing and every entry's attributes.
//! Within it, the group listing and the manifest summaries it needs are checked against
//! the disk once, not once per entry. The scope is per thread (a request is served by
//! one thread from start to end) and holds what was checked since that READDIRPLUS
//! began; outside a scope every use checks again, so a change made elsewhere shows at
//! the next request.

use std::cell::RefCell;
use std::sync::Arc;

use crate::store::format::names::{BackupDir, BackupGroup};

use super::groups::GroupListing;
use super::meta::SnapSummary;
use super::Vfs;

/// Entries a scope holds at most of each kind (a folder of groups needs one per group).
const MAX_KEPT: usize = 4096;

struct Scope {
    /// The `Vfs` it belongs to (tests run several in one thread).
    vfs: *const Vfs,
    groups: Vec<(BackupGroup, Arc<GroupListing>)>,
    summaries: Vec<(BackupDir, Arc<SnapSummary>)>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Ends the scope when dropped.
pub(super) struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        SCOPE.with(|s| *s.borrow_mut() = None);
    }
}

/// Start a scope for `vfs` on this thread, until the guard goes.
pub(super) fn enter(vfs: &Vfs) -> Guard {
    SCOPE.with(|s| {
        *s.borrow_mut() = Some(Scope {
            vfs: vfs as *const Vfs,
            groups: Vec::new(),
            summaries: Vec::new(),
        })
    });
    Guard(())
}

fn with<T>(vfs: &Vfs, f: impl FnOnce(&mut Scope) -> Option<T>) -> Option<T> {
    SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(sc) if std::ptr::eq(sc.vfs, vfs) => f(sc),
        _ => None,
    })
}

pub(super) fn group(vfs: &Vfs, g: &BackupGroup) -> Option<Arc<GroupListing>> {
    with(vfs, |sc| {
        sc.groups
            .iter()
            .find(|(k, _)| k == g)
            .map(|(_, l)| l.clone())
    })
}

pub(super) fn keep_group(vfs: &Vfs, g: &BackupGroup, l: &Arc<GroupListing>) {
    with(vfs, |sc| {
        if sc.groups.len() < MAX_KEPT {
            sc.groups.push((g.clone(), l.clone()));
        }
        Some(())
    });
}

pub(super) fn summary(vfs: &Vfs, d: &BackupDir) -> Option<Arc<SnapSummary>> {
    with(vfs, |sc| {
        sc.summaries
            .iter()
            .find(|(k, _)| k == d)
            .map(|(_, s)| s.clone())
    })
}

pub(super) fn keep_summary(vfs: &Vfs, d: &BackupDir, s: &Arc<SnapSummary>) {
    with(vfs, |sc| {
        if sc.summaries.len() < MAX_KEPT {
            sc.summaries.push((d.clone(), s.clone()));
        }
        Some(())
    });
}
