//! Operations over a whole datastore that read many snapshots and chunks: verify, prune
//! and garbage collection. Each returns a report; the CLI prints it.

pub mod gc;
pub mod prune;
pub mod verify;
