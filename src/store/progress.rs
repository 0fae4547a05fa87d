//! How far a long store operation is (`init`'s chunk folders, verify, gc), reported
//! through a callback the caller passes: the store knows no terminal, and `None` costs
//! one branch. Below both the chunk store and `ops`, which report through it.

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
