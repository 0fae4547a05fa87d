//! What a backup reads: `ARCHIVE:PATH` arguments, the archive names they map to, and the
//! checks made on each source before anything is created.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use crate::store::format::names::is_safe_id;
use crate::util::error::{Error, IoContext, Result};

/// A blob source larger than this is refused (the protocol's blob limit).
pub const MAX_BLOB_SOURCE: u64 = 16 << 20;

/// What to back up under which archive name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveSource {
    /// `NAME.img:FILE`: a fixed index of a regular file or block device.
    Image { name: String, path: PathBuf },
    /// `NAME.conf|.json|.log:FILE`: a blob.
    Blob { name: String, path: PathBuf },
}

impl ArchiveSource {
    /// Parse `ARCHIVE:PATH`.
    pub fn parse(spec: &str) -> Result<ArchiveSource> {
        let (name, path) = spec.split_once(':').ok_or_else(|| {
            Error::invalid(
                format!("'{spec}'"),
                "not ARCHIVE:PATH (e.g. drive-scsi0.img:/dev/sda)",
            )
        })?;
        if !is_safe_id(name) || name.starts_with("index.json") || name == "client.log" {
            return Err(Error::invalid(
                format!("'{name}'"),
                "not a valid archive name",
            ));
        }
        let path = PathBuf::from(path);
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "img" => Ok(ArchiveSource::Image {
                name: name.into(),
                path,
            }),
            "conf" | "json" | "log" => Ok(ArchiveSource::Blob {
                name: name.into(),
                path,
            }),
            "pxar" | "mpxar" | "ppxar" => Err(Error::invalid(
                format!("'{name}'"),
                "pxar archives are not supported yet",
            )),
            _ => Err(Error::invalid(
                format!("'{name}'"),
                "archive names end in .img (image) or .conf, .json, .log (blob)",
            )),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ArchiveSource::Image { name, .. } | ArchiveSource::Blob { name, .. } => name,
        }
    }

    /// The file name in the snapshot folder.
    pub fn server_name(&self) -> String {
        match self {
            ArchiveSource::Image { name, .. } => format!("{name}.fidx"),
            ArchiveSource::Blob { name, .. } => format!("{name}.blob"),
        }
    }
}

/// Refuse a source that cannot be backed up, before anything is created.
pub(super) fn check_source(src: &ArchiveSource) -> Result<()> {
    let (path, image) = match src {
        ArchiveSource::Image { path, .. } => (path, true),
        ArchiveSource::Blob { path, .. } => (path, false),
    };
    let md = std::fs::metadata(path).ctx(format!("{}: source {}", src.name(), path.display()))?;
    if image && !(md.is_file() || md.file_type().is_block_device()) {
        return Err(Error::invalid(
            path.display(),
            "images must be regular files or block devices",
        ));
    }
    if !image && !md.is_file() {
        return Err(Error::invalid(
            path.display(),
            "blobs must be regular files",
        ));
    }
    if !image && md.len() > MAX_BLOB_SOURCE {
        return Err(Error::TooLarge {
            what: format!("{} (back it up as an image)", path.display()),
            size: md.len(),
            limit: MAX_BLOB_SOURCE,
        });
    }
    Ok(())
}

pub(super) fn source_len(file: &mut File, path: &std::path::Path) -> Result<u64> {
    let md = file.metadata().ctx(path.display())?;
    if md.is_file() {
        Ok(md.len())
    } else if md.file_type().is_block_device() {
        let len = file.seek(SeekFrom::End(0)).ctx(path.display())?;
        file.seek(SeekFrom::Start(0)).ctx(path.display())?;
        Ok(len)
    } else {
        Err(Error::invalid(
            path.display(),
            "images must be regular files or block devices",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_specs() {
        assert!(matches!(
            ArchiveSource::parse("drive-scsi0.img:/dev/sda").unwrap(),
            ArchiveSource::Image { .. }
        ));
        let b = ArchiveSource::parse("qemu-server.conf:/etc/x.conf").unwrap();
        assert_eq!(b.server_name(), "qemu-server.conf.blob");
        for bad in [
            "noext:/x",
            "a/b.img:/x",
            "root.pxar:/",
            "index.json:/x",
            "x.img",
            "client.log:/x",
        ] {
            assert!(ArchiveSource::parse(bad).is_err(), "{bad}");
        }
    }
}
