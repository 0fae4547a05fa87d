//! pbsfs: a Proxmox Backup Server datastore as a library, a CLI and a filesystem.
//!
//! The library reads and writes PBS's exact on-disk format (see `docs/design.md` and the
//! format spec it follows): DataBlobs, the chunk store, fixed and dynamic indexes,
//! manifests, and PBS's locks, so a real PBS datastore opens as-is and can be edited
//! beside a running PBS.
//!
//! # Layers
//!
//! `main.rs` -> `cli`/`commands` -> `fuse` -> `vfs` | `backup` -> `store` -> `util`; arrows
//! point down only: `store` imports nothing from `backup`, `vfs`, `fuse` or `commands`
//! (see `docs/design.md`).
//!
//! # Locking table
//!
//! Every operation and the locks it takes (spec §5.4, §11.7). "Snapshot" and "group"
//! locks are lock files (on a configured PBS store: PBS's new-scheme files under
//! `/run/proxmox-backup/locks/<store>/` *and* the old scheme's folder `flock`s; otherwise
//! the same escaped names under `<store>/.locks/`). The guard types are in
//! `store::lock`: `SharedSnapshotLock` and `ExclusiveSnapshotLock` are different types;
//! `ManifestLock` has no public constructor and only stores the manifest of its own
//! snapshot. The manifest lock is one exclusive lock file per scheme, taken under a
//! single 5 s deadline. The process lock is an OFD `fcntl` record lock on
//! `<store>/.lock`.
//!
//! | operation                          | process `.lock` | group     | snapshot                 | manifest |
//! |------------------------------------|-----------------|-----------|--------------------------|----------|
//! | `update_manifest` (notes, verify_state, mount edits) | - | -   | shared, non-blocking     | 5 s      |
//! | `create_manifest` (backup finish)  | (backup's)      | (backup's)| exclusive (caller's guard, same snapshot) | 5 s |
//! | backup                             | shared          | exclusive | new: exclusive; base and previous split archive (metadata mode): shared | at finish |
//! | verify (check phase)               | -               | -         | shared, non-blocking     | -        |
//! | verify (record `verify_state`)     | -               | -         | shared (via update)      | 5 s      |
//! | forget / prune (destroy)           | -               | emptied group: try | exclusive, non-blocking | 5 s (finished only) |
//! | protect / unprotect                | -               | -         | exclusive, non-blocking  | -        |
//! | group notes                        | -               | exclusive, non-blocking | -          | -        |
//! | gc                                 | exclusive       | -         | -                        | -        |
//! | read (`cat`, an open archive in the mount) | -       | -         | shared, non-blocking     | -        |
//!
//! Never held across user input: the mount takes these per save and releases them at once.

#![deny(unsafe_code)]

pub mod backup;
pub mod cli;
pub mod commands;
pub mod fuse;
pub mod logging;
pub mod manual;
pub mod pxar;
pub mod restore;
pub mod store;
pub mod util;
pub mod vfs;

pub use store::Datastore;
pub use util::digest::Digest;
pub use util::error::{Error, Result};
