//! What a backup reads: `ARCHIVE:PATH` arguments (images, blobs, pxar folders), the
//! archive names they map to, and the checks made on each source before anything is
//! created.

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
    /// `NAME.pxar:DIR`: a single-stream pxar archive of a folder (dynamic index).
    Pxar { name: String, path: PathBuf },
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
            "pxar" => Ok(ArchiveSource::Pxar {
                name: name.into(),
                path,
            }),
            "mpxar" | "ppxar" => Err(Error::invalid(
                format!("'{name}'"),
                "split pxar archives are not supported yet: back the folder up as NAME.pxar",
            )),
            _ => Err(Error::invalid(
                format!("'{name}'"),
                "archive names end in .img (image), .conf, .json, .log (blob) or .pxar (folder)",
            )),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ArchiveSource::Image { name, .. }
            | ArchiveSource::Blob { name, .. }
            | ArchiveSource::Pxar { name, .. } => name,
        }
    }

    /// The file name in the snapshot folder.
    pub fn server_name(&self) -> String {
        match self {
            ArchiveSource::Image { name, .. } => format!("{name}.fidx"),
            ArchiveSource::Blob { name, .. } => format!("{name}.blob"),
            ArchiveSource::Pxar { name, .. } => format!("{name}.didx"),
        }
    }
}

/// Refuse a source that cannot be backed up, before anything is created.
pub(super) fn check_source(src: &ArchiveSource) -> Result<()> {
    let (path, image) = match src {
        ArchiveSource::Image { path, .. } => (path, true),
        ArchiveSource::Blob { path, .. } => (path, false),
        ArchiveSource::Pxar { path, .. } => {
            let md = std::fs::metadata(path).ctx(format!(
                "{}: source {}",
                src.name(),
                path.display()
            ))?;
            if !md.is_dir() {
                return Err(Error::NotADirectory {
                    what: format!("{}: source {}", src.name(), path.display()),
                });
            }
            return Ok(());
        }
    };
    let md = std::fs::metadata(path).ctx(format!("{}: source {}", src.name(), path.display()))?;
    if image && !(md.is_file() || md.file_type().is_block_device()) {
        return Err(Error::invalid(
            path.display(),
            "images must be regular files or block devices",
        ));
    }
    if image {
        let mut file =
            File::open(path).ctx(format!("{}: source {}", src.name(), path.display()))?;
        if source_len(&mut file, path)? == 0 {
            return Err(empty_image(src, path));
        }
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

/// An image source of 0 bytes: PBS cannot open an empty `.fidx` (it maps zero bytes),
/// and GC stops at the first index it cannot open, for the whole datastore (spec §11.9).
pub(super) fn empty_image(src: &ArchiveSource, path: &std::path::Path) -> Error {
    Error::invalid(
        format!("image {}: source {}", src.name(), path.display()),
        "empty (0 bytes): PBS cannot open an empty fixed index, and one such index stops \
         garbage collection of the whole datastore; leave this archive out",
    )
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
        let p = ArchiveSource::parse("root.pxar:/").unwrap();
        assert!(matches!(p, ArchiveSource::Pxar { .. }));
        assert_eq!(p.server_name(), "root.pxar.didx");
        for bad in [
            "noext:/x",
            "a/b.img:/x",
            "root.mpxar:/",
            "root.ppxar:/",
            "catalog.pcat1:/",
            "index.json:/x",
            "x.img",
            "client.log:/x",
        ] {
            assert!(ArchiveSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_image_source_is_refused_and_an_empty_blob_is_not() {
        let dir = std::env::temp_dir().join(format!("pbsfs-empty-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let img = ArchiveSource::parse(&format!("drive-scsi0.img:{}", empty.display())).unwrap();
        let e = check_source(&img).unwrap_err();
        assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("drive-scsi0.img") && msg.contains(&empty.display().to_string()),
            "names the source: {msg}"
        );
        assert!(
            msg.contains("empty") && msg.contains("garbage collection"),
            "{msg}"
        );
        // One byte is enough; an empty blob is a valid blob for PBS.
        std::fs::write(&empty, b"x").unwrap();
        check_source(&img).unwrap();
        std::fs::write(&empty, b"").unwrap();
        let blob = ArchiveSource::parse(&format!("a.conf:{}", empty.display())).unwrap();
        check_source(&blob).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
