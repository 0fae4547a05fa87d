//! The listing of a group folder, cached: its snapshot folders (time, folder inode,
//! owner, finished or not) and whether it has an `owner` file. Listing a group, looking
//! a snapshot or `latest` up in it, and the attributes of the group, its `latest` and its
//! snapshots all come from this one scan instead of one scan (and two `stat`s per
//! snapshot) each.
//!
//! A cached listing is used while the group folder's identity, mtime and ctime are
//! unchanged (a snapshot folder made, forgotten or made again changes them), after a
//! check that no snapshot listed as running has finished meanwhile (its
//! `index.json.blob` appeared, which changes only the snapshot folder). A listing taken
//! within `RACY` of the folder's last change may miss a later change within the same
//! timestamp tick: it is never reused (but within one READDIRPLUS, see `scope.rs`).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::store::format::manifest::MANIFEST_BLOB_NAME;
use crate::store::format::names::BackupGroup;
use crate::store::GROUP_OWNER;
use crate::util::error::{Error, IoContext, Result};
use crate::util::sys::{self, EntryType};

use super::node::systime;
use super::{scope, Vfs};

/// Group listings kept at most; the least used go beyond.
pub const MAX_GROUPS: usize = 1024;
/// A listing taken this soon after a change of its folder is not reused: a later change
/// may leave the same mtime.
const RACY: Duration = Duration::from_secs(1);

/// One snapshot folder of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapEntry {
    pub time: i64,
    /// The folder's inode (part of the snapshot's node key).
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
    /// It has an `index.json.blob` (running backups have none and are not shown).
    pub finished: bool,
}

#[derive(Debug)]
pub struct GroupListing {
    /// Inode, mtime and ctime of the group folder when it was listed.
    stamp: (u64, i64, i64, i64, i64),
    racy: bool,
    /// Owner and mtime of the group folder.
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    /// The group has an `owner` file.
    pub owner: bool,
    /// Snapshot folders, oldest first, running ones included.
    pub snaps: Vec<SnapEntry>,
}

impl GroupListing {
    /// The newest finished snapshot.
    pub fn last_finished(&self) -> Option<&SnapEntry> {
        self.snaps.iter().rev().find(|s| s.finished)
    }

    /// The snapshot folder of `time`, finished or not.
    pub fn at(&self, time: i64) -> Option<&SnapEntry> {
        self.snaps
            .binary_search_by_key(&time, |s| s.time)
            .ok()
            .map(|i| &self.snaps[i])
    }
}

fn stamp_of(md: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        md.ino(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    )
}

/// Is `rel` (beneath `dir`, no symlink followed) a regular file?
fn is_file_beneath(dir: &File, rel: &Path) -> bool {
    sys::open_beneath(dir, rel, libc::O_PATH | libc::O_NOFOLLOW, 0)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file())
}

impl Vfs {
    /// The listing of group `g`: the cached one while its folder is unchanged, else a new
    /// scan. `NotFound` when the group folder is gone.
    pub(super) fn group_listing(&self, g: &BackupGroup) -> Result<Arc<GroupListing>> {
        if let Some(l) = scope::group(self, g) {
            return Ok(l);
        }
        let kept = self.groups.get(g);
        let path = self.ds.group_path(g);
        let dir = self.ds.fs().open_dir(&path)?;
        let md = dir.metadata().ctx(path.display())?;
        let stamp = stamp_of(&md);
        if let Some(l) = &kept {
            if l.stamp == stamp && !l.racy && !self.finished_meanwhile(&dir, l) {
                scope::keep_group(self, g, l);
                return Ok(l.clone());
            }
        }
        let l = Arc::new(self.scan_group(g, &dir, &path, &md)?);
        self.groups.insert(g.clone(), l.clone());
        scope::keep_group(self, g, &l);
        Ok(l)
    }

    /// Has a snapshot listed as running finished since?
    fn finished_meanwhile(&self, dir: &File, l: &GroupListing) -> bool {
        l.snaps.iter().filter(|s| !s.finished).any(|s| {
            crate::util::time::format_utc(s.time).is_some_and(|name| {
                is_file_beneath(dir, &Path::new(&name).join(MANIFEST_BLOB_NAME))
            })
        })
    }

    fn scan_group(
        &self,
        g: &BackupGroup,
        dir: &File,
        path: &Path,
        md: &std::fs::Metadata,
    ) -> Result<GroupListing> {
        let now = SystemTime::now();
        let mut owner = false;
        let mut found = Vec::new();
        for (name, ty) in sys::read_dir_fd(dir).ctx(path.display())? {
            let Some(n) = name.to_str() else {
                continue;
            };
            if n == GROUP_OWNER {
                owner = match ty {
                    EntryType::File => true,
                    EntryType::Unknown => is_file_beneath(dir, Path::new(n)),
                    _ => false,
                };
                continue;
            }
            if !matches!(ty, EntryType::Dir | EntryType::Unknown) || n.starts_with('.') {
                continue;
            }
            let Some(time) = crate::util::time::parse_snapshot_time(n) else {
                continue;
            };
            if crate::store::format::names::BackupDir::new(g.clone(), time).is_err() {
                continue;
            }
            found.push((n.to_string(), time));
        }
        let mut snaps = probe_snapshots(dir, path, &found)?;
        snaps.sort_by_key(|s| s.time);
        snaps.dedup_by_key(|s| s.time);
        let mtime = systime(md.mtime(), md.mtime_nsec());
        let ctime = systime(md.ctime(), md.ctime_nsec());
        let racy = [mtime, ctime]
            .iter()
            .any(|t| now.duration_since(*t).map_or(true, |d| d < RACY));
        Ok(GroupListing {
            stamp: stamp_of(md),
            racy,
            uid: md.uid(),
            gid: md.gid(),
            mtime,
            owner,
            snaps,
        })
    }

    /// Forget the cached listing of `g` (a change made through the mount).
    pub(super) fn forget_group_listing(&self, g: &BackupGroup) {
        self.groups.remove(g);
    }
}

/// Snapshot folders at most probed by one thread: a cold group of 100 snapshots waits
/// on 100 inode reads and 100 folder reads, which the disk serves side by side.
const PROBES_PER_THREAD: usize = 25;

/// The entries of the snapshot folders `found` (name, time) in group folder `dir`: each
/// folder's inode and owner, and whether its manifest exists (a finished snapshot). Folders
/// gone meanwhile are skipped. Many are probed on a few threads.
fn probe_snapshots(dir: &File, path: &Path, found: &[(String, i64)]) -> Result<Vec<SnapEntry>> {
    let probe = |part: &[(String, i64)]| -> Result<Vec<SnapEntry>> {
        let mut out = Vec::with_capacity(part.len());
        for (n, time) in part {
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let Ok(snap) = sys::open_beneath(dir, Path::new(n), flags, 0) else {
                continue;
            };
            let smd = snap
                .metadata()
                .map_err(|e| Error::io(path.join(n).display(), e))?;
            let finished =
                sys::stat_at(&snap, OsStr::new(MANIFEST_BLOB_NAME)).is_ok_and(|s| s.is_file());
            out.push(SnapEntry {
                time: *time,
                ino: smd.ino(),
                uid: smd.uid(),
                gid: smd.gid(),
                finished,
            });
        }
        Ok(out)
    };
    if found.len() <= PROBES_PER_THREAD {
        return probe(found);
    }
    let parts = found.chunks(found.len().div_ceil(4).max(PROBES_PER_THREAD));
    std::thread::scope(|s| {
        let probes: Vec<_> = parts.map(|p| s.spawn(move || probe(p))).collect();
        let mut all = Vec::with_capacity(found.len());
        for p in probes {
            all.extend(p.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?);
        }
        Ok(all)
    })
}
