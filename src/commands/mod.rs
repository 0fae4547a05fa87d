//! One module per subcommand: each turns parsed arguments into library calls and prints
//! the result. Shared here: opening the store and resolving SNAPSHOT / GROUP arguments.

pub mod backup;
pub mod cat;
pub mod catalog;
pub mod diff;
pub mod find;
pub mod generate;
pub mod list;
pub mod manage;
pub mod mount;
pub mod mount_helper;
pub mod namespaces;
pub mod notes;
pub mod output;
pub mod progress;
pub mod restore;
pub mod verify;

use std::path::Path;

use crate::cli::{Cli, Command};
use crate::store::format::archive::ArchiveName;
use crate::store::format::manifest::{Manifest, CLIENT_LOG_BLOB_NAME};
use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace};
use crate::store::Datastore;
use crate::util::error::{Error, Result};

/// Run a parsed command; returns the exit code (errors are returned, not printed). A
/// byte bar a failed backup or restore drew is cleared first, so the error the caller
/// prints starts its own line.
pub fn run(cli: Cli) -> Result<i32> {
    let res = dispatch(cli);
    if res.is_err() {
        progress::finish_bytes();
    }
    res
}

fn dispatch(cli: Cli) -> Result<i32> {
    let pbs = cli.pbs_store.as_deref();
    match cli.command {
        Command::Init { store } => backup::init(&store),
        Command::Backup(args) => backup::run(&args, pbs),
        Command::Snapshots(args) => list::snapshots(&args, pbs),
        Command::Groups {
            store,
            ns,
            output_format,
        } => list::groups(&store, ns.as_deref(), output_format, pbs),
        Command::Namespaces(args) => namespaces::run(&args, pbs),
        Command::Cat {
            store,
            snapshot,
            archive,
            ns,
        } => cat::run(&store, ns.as_deref(), &snapshot, &archive, pbs),
        Command::Notes(args) => notes::run(&args, pbs),
        Command::Verify(args) => verify::run(&args, pbs),
        Command::Forget {
            store,
            snapshot,
            ns,
        } => manage::forget(&store, ns.as_deref(), &snapshot, pbs),
        Command::Protected {
            store,
            snapshot,
            state,
            ns,
        } => manage::protected(&store, ns.as_deref(), &snapshot, state, pbs),
        Command::Prune(args) => manage::prune(&args, pbs),
        Command::Gc {
            store,
            atime_cutoff,
            force,
            output_format,
        } => manage::gc(&store, atime_cutoff, force, output_format, pbs),
        Command::Mount(args) => mount::run(&args, pbs),
        Command::Umount { mountpoint } => mount::umount(&mountpoint),
        Command::Restore(args) => restore::run(&args, pbs),
        Command::Catalog(args) => catalog::run(&args, pbs),
        Command::Find(args) => find::run(&args, pbs),
        Command::Diff(args) => diff::run(&args, pbs),
        Command::GenerateMan { dir } => generate::man_pages(&dir),
        Command::GenerateCompletions { shell } => generate::completions(shell),
        Command::CompleteNames { store, ns } => generate::names(&store, ns.as_deref(), pbs),
    }
}

pub fn open_store(path: &Path, pbs: Option<&str>) -> Result<Datastore> {
    Datastore::open(path, pbs)
}

pub fn parse_ns(ns: Option<&str>) -> Result<BackupNamespace> {
    BackupNamespace::parse(ns.unwrap_or(""))
}

/// `TYPE/ID/TIME` or `TYPE/ID/latest` (the newest finished snapshot).
pub fn resolve_snapshot(ds: &Datastore, ns: &BackupNamespace, s: &str) -> Result<BackupDir> {
    if let Some(g) = s.strip_suffix("/latest") {
        let group = BackupGroup::parse(ns, g)?;
        return ds
            .last_finished(&group)?
            .map(|i| i.dir)
            .ok_or_else(|| Error::not_found(format!("a finished snapshot of group {group}")));
    }
    BackupDir::parse(ns, s)
}

/// Map a user's archive name (`drive-scsi0.img`, `drive-scsi0.img.fidx`, `client.log`) to
/// an archive the snapshot has: one its manifest lists, or its `client.log.blob`.
pub fn resolve_archive(
    ds: &Datastore,
    d: &BackupDir,
    m: &Manifest,
    name: &str,
) -> Result<ArchiveName> {
    let mut files: Vec<String> = m.files()?.into_iter().map(|f| f.filename).collect();
    if ds
        .fs()
        .is_file(&ds.snapshot_path(d).join(CLIENT_LOG_BLOB_NAME))
    {
        files.push(CLIENT_LOG_BLOB_NAME.to_string());
    }
    match ArchiveName::resolve(name, files.iter().map(String::as_str)) {
        Some(file) => ArchiveName::parse(&file),
        None => Err(Error::not_found(format!(
            "archive '{name}' in snapshot {d} (it has: {})",
            files.join(", ")
        ))),
    }
}
