//! The command-line grammar (clap): every subcommand, its arguments, and the SIZE and
//! DURATION units shared by them. Parsing only; `commands/` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pbsfs",
    version,
    about = "A Proxmox Backup Server datastore as a filesystem, and the CLI to manage it",
    after_help = "Exit codes: 0 ok, 1 verify found damage, 2 any other error."
)]
pub struct Cli {
    /// Name of the PBS datastore (in datastore.cfg) this folder is; by default looked up
    /// by path. Selects PBS's own lock files.
    #[arg(long, global = true, value_name = "NAME")]
    pub pbs_store: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a datastore (all 65536 chunk folders, .lock).
    Init {
        /// The folder to create it in (new or empty).
        store: PathBuf,
    },
    /// Back up files and directories into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List backup groups.
    Groups {
        /// The datastore folder (a PBS datastore opens as-is).
        store: PathBuf,
        /// The namespace, as a/b (default: the root namespace; without --ns a note on
        /// stderr says when other namespaces hold snapshots).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
        /// Output format: text, json or json-pretty.
        #[arg(long, value_enum, default_value = "text")]
        output_format: OutputFormat,
    },
    /// List namespaces as a tree, with their groups and snapshots counted.
    Namespaces(NamespacesArgs),
    /// Write an archive's content to stdout, every chunk verified.
    Cat {
        /// The datastore folder (a PBS datastore opens as-is).
        store: PathBuf,
        /// TYPE/ID/TIME or TYPE/ID/latest
        snapshot: String,
        /// e.g. drive-scsi0.img or drive-scsi0.img.fidx, qemu-server.conf
        archive: String,
        /// The namespace, as a/b (default: the root namespace).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
    },
    /// Show or set snapshot notes (TYPE/ID/TIME) or group notes (TYPE/ID).
    Notes(NotesArgs),
    /// Verify chunks, indexes and blobs; record verify_state.
    Verify(VerifyArgs),
    /// Remove one snapshot.
    Forget {
        /// The datastore folder (a PBS datastore opens as-is).
        store: PathBuf,
        /// The snapshot, as TYPE/ID/TIME (e.g. vm/100/2024-05-02T08:11:33Z).
        snapshot: String,
        /// The namespace, as a/b (default: the root namespace).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
    },
    /// Show or set a snapshot's protection.
    Protected {
        /// The datastore folder (a PBS datastore opens as-is).
        store: PathBuf,
        /// The snapshot, as TYPE/ID/TIME (e.g. vm/100/2024-05-02T08:11:33Z).
        snapshot: String,
        /// on or off (without it: show the current state).
        state: Option<OnOff>,
        /// The namespace, as a/b (default: the root namespace).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
    },
    /// Remove snapshots of a group by PBS's keep rules.
    Prune(PruneArgs),
    /// Garbage collection: remove chunks no index references.
    Gc {
        /// The datastore folder (a PBS datastore opens as-is).
        store: PathBuf,
        /// Keep unreferenced chunks whose atime is newer than this (default 24h5m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        atime_cutoff: Option<u64>,
        /// Run even on a datastore PBS manages (whose GC is PBS's job: PBS alone knows
        /// when its running backups started); only when PBS runs no backup
        #[arg(long)]
        force: bool,
        /// Output format of the summary: text, json or json-pretty (PBS's GC status).
        #[arg(long, value_enum, default_value = "text")]
        output_format: OutputFormat,
    },
    /// Mount the datastore as a filesystem.
    #[command(
        long_about = crate::manual::MOUNT_ABOUT,
        after_long_help = crate::manual::mount_after_help()
    )]
    Mount(MountArgs),
    /// Unmount a pbsfs mount.
    Umount {
        /// Where it is mounted (also a mount whose server has ended).
        mountpoint: PathBuf,
    },
    /// Restore an archive: an image to a file (sparse), a blob to a file, a pxar archive
    /// to a folder.
    Restore(RestoreArgs),
    /// Print the entries of a snapshot's pxar archives from its catalog, as
    /// `proxmox-backup-client catalog dump` does (from the metadata archive when there is
    /// no catalog)
    Catalog(CatalogArgs),
    /// List the snapshots holding a path that matches PATTERN, from catalogs or metadata
    /// archives: no file content is read. Exit 0 on a match, 1 on none, 2 on errors
    Find(FindArgs),
    /// List the paths added (+), removed (-), changed in content (M), in metadata only
    /// (U) or in type (T) between two snapshots' pxar archives, from their metadata: no
    /// file content is read (equal size and mtime are taken as equal content). Exit 0
    /// with or without differences, 2 on errors
    Diff(DiffArgs),
    /// Write the man pages (pbsfs.1, pbsfs-SUBCOMMAND.1) into DIR (for packagers)
    #[command(hide = true)]
    GenerateMan {
        /// The folder to write the pages into.
        dir: PathBuf,
    },
    /// Print the completion script of SHELL to stdout (for packagers)
    #[command(hide = true)]
    GenerateCompletions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the group and snapshot names of STORE, one per line (for the bash, zsh
    /// and fish completion scripts)
    #[command(hide = true)]
    CompleteNames {
        /// The datastore folder.
        store: PathBuf,
        /// The namespace, as a/b (default: the root namespace).
        #[arg(long, value_name = "NS")]
        ns: Option<String>,
    },
}

/// `--output-format`, as PBS's: `json` is compact (one line, or one object per line
/// for streamed lists), `json-pretty` indented; field names are PBS's where PBS has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    JsonPretty,
}

impl OutputFormat {
    /// Either JSON form.
    pub fn is_json(self) -> bool {
        self != OutputFormat::Text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID
    pub group: String,
    /// NAME.img:FILE (fixed index), NAME.conf|.json|.log:FILE (blob), NAME.pxar:DIR
    /// (pxar archive of a folder, with the snapshot's catalog)
    #[arg(required = true, value_name = "ARCHIVE:PATH")]
    pub archives: Vec<String>,
    /// Namespace of the group; it must exist unless --create-ns
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Create the namespace (and its parents) when it does not exist
    #[arg(long)]
    pub create_ns: bool,
    /// RFC 3339 time or epoch seconds (default: now)
    #[arg(long, value_name = "TIME")]
    pub backup_time: Option<String>,
    /// Notes of the new snapshot (its manifest's unprotected notes).
    #[arg(long)]
    pub notes: Option<String>,
    /// Chunk size of fixed indexes, average chunk size of pxar archives (a power of
    /// two; default 4M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,
    /// Leave out of pxar archives what matches (gitignore-style, as the PBS client's:
    /// `*`, `**`, `!` to include again, a trailing `/` for folders only); repeatable,
    /// recorded in the archive as `.pxarexclude-cli` (split archives: in the PRELUDE)
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Descend into other file systems mounted below a pxar archive's folder (by
    /// default their mount points are stored empty)
    #[arg(long)]
    pub all_file_systems: bool,
    /// Layout of pxar archives, as the PBS client's option: `legacy` (one stream and the
    /// catalog), `data` (split NAME.mpxar + NAME.ppxar, no catalog); `metadata` is not
    /// supported yet
    #[arg(long, value_enum, default_value = "legacy", value_name = "MODE")]
    pub change_detection_mode: crate::backup::ChangeDetectionMode,
    /// Owner of a new group (default root@pam)
    #[arg(long, value_name = "AUTHID", default_value = "root@pam")]
    pub owner: String,
    /// Output format of the summary: text, json or json-pretty.
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID: only this group
    pub group: Option<String>,
    /// The namespace, as a/b (default: the root namespace; without --ns a note on
    /// stderr says when other namespaces hold snapshots).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Include unfinished snapshots
    #[arg(long)]
    pub all: bool,
    /// Output format: text, json or json-pretty.
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct NamespacesArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// Only this namespace and those below it, as a/b (default: the root, so all).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// List at most DEPTH levels below --ns (0: --ns alone), as PBS's max-depth.
    #[arg(long, value_name = "DEPTH")]
    pub max_depth: Option<usize>,
    /// Output format: text, json or json-pretty.
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct NotesArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID/TIME, TYPE/ID/latest or TYPE/ID (group notes)
    pub target: String,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// New notes ("" clears them)
    #[arg(long, conflicts_with = "set_file")]
    pub set: Option<String>,
    /// Read new notes from FILE, or stdin with -
    #[arg(long, value_name = "FILE")]
    pub set_file: Option<PathBuf>,
    /// Output format: text (the notes byte-exact), json or json-pretty ({"notes": ...}
    /// and the snapshot or group they belong to; after --set, the notes as stored).
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID/TIME or TYPE/ID; default: the whole store
    pub target: Option<String>,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Skip snapshots that already have a verify_state
    #[arg(long)]
    pub ignore_verified: bool,
    /// With --ignore-verified: re-verify states older than DAYS (PBS's outdated-after;
    /// without --ignore-verified every snapshot is verified anyway, so it is refused)
    #[arg(long, value_name = "DAYS", requires = "ignore_verified")]
    pub outdated_after: Option<u64>,
    /// Rename corrupt chunks to <digest>.<n>.bad (the default, as PBS does: the next
    /// backup then writes them again)
    #[arg(long, conflicts_with = "keep_bad")]
    pub rename_bad: bool,
    /// Leave corrupt chunks in place (they are then never healed by a backup)
    #[arg(long)]
    pub keep_bad: bool,
    /// Output format: text, json or json-pretty (the exit code is the same).
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID
    pub group: String,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_last: Option<u64>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_hourly: Option<u64>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_daily: Option<u64>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_weekly: Option<u64>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_monthly: Option<u64>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_yearly: Option<u64>,
    /// Only print what would be removed
    #[arg(long)]
    pub dry_run: bool,
    /// Output format: text, json or json-pretty (PBS's prune list).
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID/TIME or TYPE/ID/latest
    pub snapshot: String,
    /// e.g. drive-scsi0.img, qemu-server.conf, root.pxar
    pub archive: String,
    /// The file (image, blob) or folder (pxar) to restore into; created when missing
    pub target: PathBuf,
    /// Only this file or subtree of a pxar archive
    #[arg(long, value_name = "SUBPATH")]
    pub path: Option<String>,
    /// Replace an existing target file, or restore into a non-empty folder
    #[arg(long)]
    pub overwrite: bool,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID/TIME or TYPE/ID/latest
    pub snapshot: String,
    /// Only this pxar archive (e.g. root.pxar or root.pxar.didx)
    pub archive: Option<String>,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Output format: text, json or json-pretty.
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// TYPE/ID/TIME or TYPE/ID/latest: the older side
    pub snapshot_a: String,
    /// TYPE/ID/TIME or TYPE/ID/latest: the newer side
    pub snapshot_b: String,
    /// Only this pxar archive (e.g. root.pxar); default: every pxar archive of either
    pub archive: Option<String>,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Output format: text, json or json-pretty.
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

#[derive(Debug, Args)]
#[command(override_usage = "pbsfs find [OPTIONS] <STORE> [GROUP] <PATTERN>")]
pub struct FindArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    // One list: clap allows no optional positional before a required one.
    /// GROUP (TYPE/ID): only this group's snapshots (default: every group of the
    /// namespace). PATTERN: a shell glob (`*`, `?`, `[...]`, `**` across folders)
    /// matched against file names or, when it contains a `/`, against the whole path
    /// inside the archive (leading `/` optional; a trailing `/` matches directories
    /// only)
    #[arg(required = true, num_args = 1..=2, value_name = "[GROUP] PATTERN")]
    pub operands: Vec<std::ffi::OsString>,
    /// The namespace, as a/b (default: the root namespace).
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Match letters regardless of case
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
    /// Output format: text, json or json-pretty.
    #[arg(long, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
}

impl FindArgs {
    /// GROUP, when given (a group name is UTF-8, checked when parsed).
    pub fn group(&self) -> Option<std::borrow::Cow<'_, str>> {
        (self.operands.len() == 2).then(|| self.operands[0].to_string_lossy())
    }

    /// PATTERN: the last operand, bytes as given.
    pub fn pattern(&self) -> &std::ffi::OsStr {
        self.operands.last().expect("clap requires one operand")
    }
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The datastore folder (a PBS datastore opens as-is).
    pub store: PathBuf,
    /// The empty folder to mount on.
    pub mountpoint: PathBuf,
    /// Mount options: ro, allow_other, default_permissions, ... (comma-separated)
    #[arg(short = 'o', value_name = "OPTIONS", value_delimiter = ',')]
    pub options: Vec<String>,
    /// Serve in the foreground (logs to stderr); SIGINT/SIGTERM unmount, SIGUSR1 logs
    /// the statistics (requests, bytes served, chunk cache hits and misses)
    #[arg(long)]
    pub foreground: bool,
    /// Size of the verified-chunk cache (default 24M)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Show only this namespace (and its children)
    #[arg(long, value_name = "NS")]
    pub ns: Option<String>,
    /// Append log lines to PATH. Without it a foreground mount logs to stderr and a
    /// background one to syslog, or, when no log daemon listens on /dev/log, to a file
    /// it names when it starts (/var/log/pbsfs/MOUNTPOINT.log for root)
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Internal: fd of the readiness pipe of a background mount
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
}

/// SIZE: bytes with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (bytes with an optional K, M or G suffix)"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// DURATION: `0` or numbers with s, m, h, d units (`90s`, `24h5m`), in seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a duration (0, or e.g. 90s, 24h5m, 2d)");
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` and the man pages describe every argument and option of every command.
    #[test]
    fn every_argument_and_option_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && !a.is_hide_set() && a.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(
            &<Cli as clap::CommandFactory>::command(),
            "pbsfs",
            &mut missing,
        );
        assert!(missing.is_empty(), "without a description: {missing:?}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4M").unwrap(), 4 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert!(parse_size("4MB").is_err() && parse_size("").is_err() && parse_size("-1").is_err());
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("24h5m").unwrap(), 86_700);
        assert_eq!(parse_duration("2d").unwrap(), 172_800);
        for bad in ["", "5", "h", "1x", "1h5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
