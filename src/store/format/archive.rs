//! Archive names (spec §1.6): what a file in a snapshot folder holds, decided once from
//! its name. Every "is this an image / a blob / a pxar archive" question goes through
//! `ArchiveKind`; nothing else tests file suffixes.

use std::fmt;

use crate::store::format::manifest::{CLIENT_LOG_BLOB_NAME, MANIFEST_BLOB_NAME};
use crate::store::format::names::is_safe_id;
use crate::util::error::{Error, Result};

/// What an archive file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveKind {
    /// `NAME.img.fidx` (or any `.fidx`): a disk image in fixed-size chunks.
    Image,
    /// `NAME.blob` (configs, keys, logs): one DataBlob.
    Blob,
    /// `client.log.blob`: the client's task log, uploaded after the manifest and never
    /// listed in it (spec §1.6).
    ClientLog,
    /// `NAME.pxar.didx`: a single-stream pxar archive.
    Pxar,
    /// `NAME.mpxar.didx`: the metadata half of a split pxar archive.
    SplitMeta,
    /// `NAME.ppxar.didx`: the payload half of a split pxar archive.
    SplitPayload,
    /// `catalog.pcat1.didx`: the file list of a legacy pxar backup.
    Catalog,
    /// Any other `.didx`: a byte stream in content-defined chunks.
    Stream,
}

/// How an archive is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    FixedIndex,
    DynamicIndex,
    Blob,
}

impl ArchiveKind {
    /// The kind of a file in a snapshot folder, or `None` for files that are no archive
    /// (the manifest, temp files, markers).
    pub fn of_file(file: &str) -> Option<ArchiveKind> {
        if file == MANIFEST_BLOB_NAME {
            return None;
        }
        if file == CLIENT_LOG_BLOB_NAME {
            return Some(ArchiveKind::ClientLog);
        }
        let (stem, ext) = file.rsplit_once('.')?;
        if stem.is_empty() {
            return None;
        }
        match ext {
            "fidx" => Some(ArchiveKind::Image),
            "blob" => Some(ArchiveKind::Blob),
            "didx" => Some(match stem.rsplit_once('.').map(|(_, e)| e) {
                Some("pxar") => ArchiveKind::Pxar,
                Some("mpxar") => ArchiveKind::SplitMeta,
                Some("ppxar") => ArchiveKind::SplitPayload,
                Some("pcat1") => ArchiveKind::Catalog,
                _ => ArchiveKind::Stream,
            }),
            _ => None,
        }
    }

    pub fn storage(self) -> Storage {
        match self {
            ArchiveKind::Image => Storage::FixedIndex,
            ArchiveKind::Blob | ArchiveKind::ClientLog => Storage::Blob,
            ArchiveKind::Pxar
            | ArchiveKind::SplitMeta
            | ArchiveKind::SplitPayload
            | ArchiveKind::Catalog
            | ArchiveKind::Stream => Storage::DynamicIndex,
        }
    }

    /// Stored as an index of chunks (as opposed to one blob).
    pub fn is_index(self) -> bool {
        self.storage() != Storage::Blob
    }

    /// The on-disk suffix after the archive's own name.
    pub fn suffix(self) -> &'static str {
        match self.storage() {
            Storage::FixedIndex => ".fidx",
            Storage::DynamicIndex => ".didx",
            Storage::Blob => ".blob",
        }
    }
}

/// A validated archive file name in a snapshot folder and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchiveName {
    file: String,
    kind: ArchiveKind,
}

impl ArchiveName {
    /// A file name as found in a folder or a manifest: a safe id with an archive suffix.
    pub fn parse(file: &str) -> Result<ArchiveName> {
        if !is_safe_id(file) {
            return Err(Error::invalid(
                format!("archive '{file}'"),
                "not a valid file name",
            ));
        }
        let kind = ArchiveKind::of_file(file).ok_or_else(|| {
            Error::invalid(
                format!("archive '{file}'"),
                "not an archive (.fidx, .didx or .blob)",
            )
        })?;
        Ok(ArchiveName {
            file: file.to_string(),
            kind,
        })
    }

    /// The archive a user names: the file name itself, or the short name without the
    /// index or blob suffix (`drive-scsi0.img`, `client.log`), looked up in `files`.
    pub fn resolve<'a>(name: &str, files: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let files: Vec<&str> = files.into_iter().collect();
        if files.contains(&name) {
            return Some(name.to_string());
        }
        // A split pair answers to the name of the folder it shows as (`root.pxar`).
        let split = name
            .strip_suffix(".pxar")
            .map(|base| format!("{base}.mpxar.didx"));
        [".fidx", ".didx", ".blob"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .chain(split)
            .find(|f| files.contains(&f.as_str()) && ArchiveKind::of_file(f).is_some())
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn kind(&self) -> ArchiveKind {
        self.kind
    }

    /// A pxar archive's name as a folder: `root.pxar` for `root.pxar.didx` and for the
    /// split pair's `root.mpxar.didx` (its payload half shows nowhere: `None`, as for
    /// archives that are no pxar archive).
    pub fn pxar_folder(&self) -> Option<String> {
        match self.kind {
            ArchiveKind::Pxar => Some(self.short().to_string()),
            ArchiveKind::SplitMeta => {
                let base = self.short().strip_suffix(".mpxar").expect("kind checked");
                Some(format!("{base}.pxar"))
            }
            _ => None,
        }
    }

    /// The payload stream of a split pair's metadata stream (`root.ppxar.didx`).
    pub fn split_payload(&self) -> Option<ArchiveName> {
        let base = self.short().strip_suffix(".mpxar")?;
        (self.kind == ArchiveKind::SplitMeta).then(|| ArchiveName {
            file: format!("{base}.ppxar.didx"),
            kind: ArchiveKind::SplitPayload,
        })
    }

    /// The name shown in the mount: the file name without `.fidx`, `.didx` or `.blob`.
    pub fn short(&self) -> &str {
        self.file
            .strip_suffix(self.kind.suffix())
            .expect("parse checked the suffix")
    }
}

impl fmt::Display for ArchiveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_name() {
        let k = |f: &str| ArchiveName::parse(f).map(|a| (a.kind(), a.short().to_string()));
        assert_eq!(
            k("drive-scsi0.img.fidx").unwrap(),
            (ArchiveKind::Image, "drive-scsi0.img".into())
        );
        assert_eq!(
            k("qemu-server.conf.blob").unwrap(),
            (ArchiveKind::Blob, "qemu-server.conf".into())
        );
        assert_eq!(
            k("client.log.blob").unwrap(),
            (ArchiveKind::ClientLog, "client.log".into())
        );
        assert_eq!(k("root.pxar.didx").unwrap().0, ArchiveKind::Pxar);
        assert_eq!(k("root.mpxar.didx").unwrap().0, ArchiveKind::SplitMeta);
        assert_eq!(k("root.ppxar.didx").unwrap().0, ArchiveKind::SplitPayload);
        assert_eq!(k("catalog.pcat1.didx").unwrap().0, ArchiveKind::Catalog);
        assert_eq!(k("data.didx").unwrap().0, ArchiveKind::Stream);
        let meta = ArchiveName::parse("root.mpxar.didx").unwrap();
        assert_eq!(meta.pxar_folder().as_deref(), Some("root.pxar"));
        assert_eq!(meta.split_payload().unwrap().file(), "root.ppxar.didx");
        let single = ArchiveName::parse("etc.pxar.didx").unwrap();
        assert_eq!(single.pxar_folder().as_deref(), Some("etc.pxar"));
        assert!(single.split_payload().is_none());
        let payload = ArchiveName::parse("root.ppxar.didx").unwrap();
        assert!(payload.pxar_folder().is_none());
        for bad in [
            "index.json.blob",
            ".fidx",
            "notes",
            "a.tmp_fidx",
            "../x.fidx",
            "a/b.blob",
            "",
        ] {
            assert!(ArchiveName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_may_name_an_archive_without_its_suffix() {
        let files = ["drive-scsi0.img.fidx", "qemu-server.conf.blob"];
        assert_eq!(
            ArchiveName::resolve("drive-scsi0.img", files).as_deref(),
            Some("drive-scsi0.img.fidx")
        );
        assert_eq!(
            ArchiveName::resolve("qemu-server.conf.blob", files).as_deref(),
            Some("qemu-server.conf.blob")
        );
        assert_eq!(ArchiveName::resolve("nope.img", files), None);
        let split = ["root.mpxar.didx", "root.ppxar.didx"];
        assert_eq!(
            ArchiveName::resolve("root.pxar", split).as_deref(),
            Some("root.mpxar.didx")
        );
    }
}
