//! pbsfs integration tests: one binary, one module per intent. Tests run the real
//! `pbsfs` binary (`CARGO_BIN_EXE_pbsfs`), real mounts, real editors, real processes.

mod common;

mod bad_input;
mod bad_input_chunks;
mod bad_input_meta;
mod bad_input_pxar;
mod catalog;
mod cli;
mod cli_manage;
mod cli_refusals;
mod concurrency;
mod corruption;
mod crash;
mod diff;
mod editors;
mod format;
mod fuzz_regressions;
mod fuzz_seeds;
mod hostile;
mod load;
mod logs;
mod mount;
mod mount_attrs;
mod mount_listing;
mod mount_memory;
mod mount_util;
mod output;
mod package;
mod pbs_alongside;
mod pbs_store;
mod progress;
mod pxar_backup;
mod pxar_decode;
mod pxar_flags;
mod pxar_metadata;
mod pxar_mount;
mod pxar_reuse;
mod pxar_split;
mod read_path;
mod restore_escapes;
mod restricted;
mod savers;
mod security;
mod system;
mod vfs;
