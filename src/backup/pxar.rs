//! A pxar archive in a backup (`NAME.pxar:DIR`): the folder walked into a single-stream
//! pxar (v1, as pxar 1.0.0 writes it), cut into content-defined chunks, stored as
//! `NAME.pxar.didx`; and the snapshot's catalog, `catalog.pcat1.didx`, with one
//! directory per pxar archive named after its server archive name, as the PBS client
//! writes it (one catalog per snapshot, listed in the manifest after the archives).
//! With `--change-detection-mode data` the archive is the split pair (spec §7.1):
//! `NAME.mpxar.didx` (metadata) + `NAME.ppxar.didx` (payloads), two chunked streams,
//! and no catalog, as the PBS client writes it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::backup::exclude::{cli_file, Pattern};
use crate::backup::pxar_prev::{open_previous, Claimed};
use crate::backup::pxar_walk::Walker;
use crate::backup::upload::{ChunkSink, Uploaded};
use crate::backup::{ArchiveSource, BackupOptions, BackupReport, UploadStats};
use crate::pxar::catalog::CatalogWriter;
use crate::store::files;
use crate::store::format::index::dynamic::DynamicIndex;
use crate::store::format::manifest::{CryptMode, FileEntry};
use crate::store::format::names::BackupDir;
use crate::store::Datastore;
use crate::util::digest::Digest;
use crate::util::error::{Error, IoContext, Result};

/// The PBS client's `--change-detection-mode`: the layout of pxar archives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChangeDetectionMode {
    /// One stream `NAME.pxar.didx` and the snapshot's catalog (every PBS reads it).
    #[default]
    Legacy,
    /// The split pair `NAME.mpxar.didx` + `NAME.ppxar.didx`, every payload written, no
    /// catalog.
    Data,
    /// The split pair; a file whose metadata and size equal the previous snapshot's
    /// entry at its path is a reference into that snapshot's payload stream, not read.
    Metadata,
}

/// The catalog's server archive name.
pub const CATALOG_NAME: &str = "catalog.pcat1.didx";

/// Where the chunks of a backup's dynamic indexes go: the store, the base's digests to
/// reuse, and the background validation of reused chunks.
pub(super) struct Uploads<'a> {
    pub ds: &'a Datastore,
    pub reuse: &'a Arc<HashSet<Digest>>,
    pub validate: Option<&'a Sender<Digest>>,
    /// The background validation, for previous archives not verified recently.
    pub checker: &'a Sender<Digest>,
    /// Previous snapshots whose payload chunks are referenced (metadata mode).
    pub claimed: &'a RefCell<Vec<Claimed>>,
    pub chunk_size: u64,
}

impl Uploads<'_> {
    fn sink(&self) -> ChunkSink {
        ChunkSink::new(
            self.ds.chunk_store(),
            self.reuse,
            self.validate,
            self.chunk_size,
        )
    }
}

/// The snapshot's catalog while the archives are written.
pub(super) type Catalog = CatalogWriter<ChunkSink>;

/// Parse the `--exclude` patterns.
fn parse_excludes(opts: &BackupOptions) -> Result<Vec<Pattern>> {
    opts.excludes
        .iter()
        .map(|p| Pattern::parse(p.as_bytes()))
        .collect()
}

/// The pxar options, checked before anything is created: patterns that parse, and
/// only with a pxar archive to apply to.
pub(super) fn check_options(opts: &BackupOptions, sources: &[ArchiveSource]) -> Result<()> {
    parse_excludes(opts)?;
    let pxar = sources
        .iter()
        .any(|s| matches!(s, ArchiveSource::Pxar { .. }));
    if !opts.excludes.is_empty() && !pxar {
        return Err(Error::invalid(
            "--exclude",
            "only pxar archives (NAME.pxar:DIR) have files to exclude",
        ));
    }
    Ok(())
}

/// Back up the folder `path` as the pxar archive of `src`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backup_pxar(
    up: &Uploads,
    dir: &BackupDir,
    src: &ArchiveSource,
    path: &Path,
    opts: &BackupOptions,
    catalog: &mut Option<Catalog>,
    report: &mut BackupReport,
    stats: &mut UploadStats,
) -> Result<Vec<FileEntry>> {
    let excludes = parse_excludes(opts)?;
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOCTTY)
        .open(path)
        .ctx(format!("{}: source {}", src.name(), path.display()))?;
    if opts.change_detection != ChangeDetectionMode::Legacy {
        return backup_split(up, dir, src, path, root, opts, &excludes, report, stats);
    }
    let cat = match catalog {
        Some(c) => c,
        None => catalog.insert(CatalogWriter::new(up.sink())?),
    };
    let server_name = src.server_name();
    cat.start_directory(server_name.as_bytes())?;
    let mut sink = up.sink();
    let mut walker = Walker::new(path, &excludes, opts.all_file_systems, cat);
    let res = walker.run(root, &mut sink);
    report.warnings += walker.warnings;
    report.add_files(&walker.counts);
    drop(walker);
    // A store error inside the chunk sink reaches the encoder as a plain io::Error:
    // report the sink's own error, which keeps its kind.
    if let Err(e) = res {
        let real = sink.take_error().or_else(|| cat.output_mut().take_error());
        return Err(real.unwrap_or(e));
    }
    cat.end_directory()?;
    let uploaded = sink.finish(report, stats)?;
    Ok(vec![write_index(up.ds, dir, &server_name, uploaded)?])
}

/// The split pair of `src` (`data` mode): both streams chunked as they are written.
#[allow(clippy::too_many_arguments)]
fn backup_split(
    up: &Uploads,
    dir: &BackupDir,
    src: &ArchiveSource,
    path: &Path,
    root: File,
    opts: &BackupOptions,
    excludes: &[Pattern],
    report: &mut BackupReport,
    stats: &mut UploadStats,
) -> Result<Vec<FileEntry>> {
    let base = src.name().strip_suffix(".pxar").ok_or_else(|| {
        Error::invalid(
            format!("archive '{}'", src.name()),
            "not a NAME.pxar archive",
        )
    })?;
    let (meta_name, payload_name) = (format!("{base}.mpxar.didx"), format!("{base}.ppxar.didx"));
    // As the PBS client: the CLI patterns go into the PRELUDE (not into a
    // `.pxarexclude-cli` file), as `{"exclude-patterns": "<that file's content>"}`.
    let prelude = if excludes.is_empty() {
        None
    } else {
        let content = String::from_utf8(cli_file(excludes))
            .map_err(|e| Error::invalid("--exclude", format!("patterns are not UTF-8: {e}")))?;
        Some(
            serde_json::to_vec(&serde_json::json!({ "exclude-patterns": content }))
                .map_err(|e| Error::other("pxar prelude", e.to_string()))?,
        )
    };
    let prev = if opts.change_detection == ChangeDetectionMode::Metadata {
        match open_previous(up.ds, &dir.group, base, up.checker)? {
            Some((prev, claimed)) => {
                up.claimed.borrow_mut().push(claimed);
                Some(prev)
            }
            None => None,
        }
    } else {
        None
    };
    // A split archive has no catalog: the walk records into a discarded one.
    let mut no_catalog = CatalogWriter::new(std::io::sink())?;
    let (mut meta_sink, mut payload_sink) = (up.sink(), up.sink());
    let mut walker =
        Walker::new(path, excludes, opts.all_file_systems, &mut no_catalog).with_previous(prev);
    let res = walker.run_split(root, &mut meta_sink, &mut payload_sink, prelude.as_deref());
    report.warnings += walker.warnings;
    report.add_files(&walker.counts);
    drop(walker);
    if let Err(e) = res {
        let real = meta_sink.take_error().or_else(|| payload_sink.take_error());
        return Err(real.unwrap_or(e));
    }
    let meta = meta_sink.finish(report, stats)?;
    let payload = payload_sink.finish(report, stats)?;
    Ok(vec![
        write_index(up.ds, dir, &meta_name, meta)?,
        write_index(up.ds, dir, &payload_name, payload)?,
    ])
}

/// Write the catalog's last blocks and its index.
pub(super) fn finish_catalog(
    ds: &Datastore,
    dir: &BackupDir,
    catalog: Catalog,
    report: &mut BackupReport,
    stats: &mut UploadStats,
) -> Result<FileEntry> {
    let sink = catalog.finish()?;
    let uploaded = sink.finish(report, stats)?;
    write_index(ds, dir, CATALOG_NAME, uploaded)
}

fn write_index(ds: &Datastore, dir: &BackupDir, name: &str, up: Uploaded) -> Result<FileEntry> {
    let idx = DynamicIndex::new(up.entries, crate::util::time::now())?;
    if idx.size() != up.size {
        return Err(Error::other(
            format!("{dir}/{name}"),
            format!("index covers {} of {} stream bytes", idx.size(), up.size),
        ));
    }
    // Through the opened snapshot folder, as image indexes are written.
    let folder = ds.fs().dir(&ds.snapshot_path(dir))?;
    files::write_index_file(&folder.join(name), &idx.to_bytes(), ds.owner())
        .map_err(|e| e.context(format!("{dir}/{name}")))?;
    Ok(FileEntry {
        filename: name.to_string(),
        crypt_mode: CryptMode::None,
        size: idx.size(),
        csum: idx.csum,
    })
}
