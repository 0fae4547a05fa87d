//! Operations over a whole datastore that read many snapshots and chunks: verify, prune
//! and garbage collection. Each returns a report; the CLI prints it. Long ones report
//! how far they are through a `ProgressFn` the caller passes (the CLI draws a bar on a
//! terminal): the store knows no terminal, and `None` costs nothing.

pub mod gc;
pub mod prune;
pub mod verify;

/// How far a long store operation is. Counts only grow within one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `init`: chunk prefix folders created, of 65536.
    ChunkFolders { done: u64, total: u64 },
    /// `verify`: the snapshot being checked (1-based) of all, and the distinct chunks
    /// checked of those queued so far (the total grows as each snapshot's indexes are
    /// read: reading them all first would read every index twice).
    Verify {
        snapshot: u64,
        snapshots: u64,
        chunks: u64,
        chunks_total: u64,
    },
    /// `gc` phase 1: index files marked, of those found.
    GcMark { done: u64, total: u64 },
    /// `gc` phase 2: chunk prefix folders swept, of 65536.
    GcSweep { done: u64, total: u64 },
}

/// A progress callback; called from worker threads too, so `Sync`. Callers that draw
/// should throttle (it may be called once per chunk).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Sync);
