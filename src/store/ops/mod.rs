//! Operations over a whole datastore that read many snapshots and chunks: verify, prune
//! and garbage collection. Each returns a report; the CLI prints it. Long ones report
//! how far they are through a `ProgressFn` the caller passes (the CLI draws a bar on a
//! terminal): the store knows no terminal, and `None` costs nothing.

pub mod gc;
pub mod prune;
pub mod verify;

/// Where the long operations (and `init`, in `chunks`) report how far they are; kept
/// in `store::progress` so the chunk store below these operations need not import them.
pub use super::progress::{Progress, ProgressFn};
