//! Reading an image chunk by chunk, past the page cache (`O_DIRECT`) where the file
//! system allows. A backup reads each byte of an image once: through the page cache it
//! evicts what the machine had cached and pays for every new cache page. On this
//! project's VM, memory the host had taken back faults again on the host, and two
//! workers faulting at once made a 1 GiB backup spend 3.5-4.1 s in the kernel; reading
//! past the cache, into a few reused buffers, 1.2-1.4 s. Buffered reads remain the
//! fallback: a file system without `O_DIRECT`, a chunk size below its alignment, a
//! short read mid-way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::util::error::{Error, Result};

/// What `O_DIRECT` wants aligned: buffer addresses, file offsets and lengths (a page
/// covers every logical block size in use).
const ALIGN: usize = 4096;

/// One chunk read from the image: its bytes are `buf[start..start + len]`, `start`
/// aligning them in memory for `O_DIRECT`. `buf` goes back to the reader for reuse.
pub(super) struct ChunkBuf {
    pub(super) buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl ChunkBuf {
    pub(super) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

pub(super) struct ImageReader {
    path: PathBuf,
    buffered: File,
    /// The same file opened with `O_DIRECT`; `None` where that is refused.
    direct: Option<File>,
}

impl ImageReader {
    /// Read `path` (opened as `buffered`) in chunks of `chunk_size` bytes.
    pub(super) fn new(path: &Path, buffered: File, chunk_size: u64) -> ImageReader {
        let direct = chunk_size
            .is_multiple_of(ALIGN as u64)
            .then(|| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)
                    .ok()
            })
            .flatten();
        ImageReader {
            path: path.to_path_buf(),
            buffered,
            direct,
        }
    }

    /// Buffered reads only (tests; what a file system without `O_DIRECT` gets).
    #[cfg(test)]
    fn without_direct(mut self) -> ImageReader {
        self.direct = None;
        self
    }

    /// The `len` bytes at `offset` (a multiple of the chunk size), read into `buf`'s
    /// memory (grown as needed; its old content is overwritten, never zero-filled again).
    pub(super) fn read_chunk(
        &mut self,
        offset: u64,
        len: usize,
        mut buf: Vec<u8>,
    ) -> Result<ChunkBuf> {
        let want = len.next_multiple_of(ALIGN);
        if buf.len() < want + ALIGN {
            buf.resize(want + ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(ALIGN);
        let mut got = 0;
        if let Some(direct) = &self.direct {
            while got < len {
                match direct.read_at(&mut buf[start + got..start + want], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => {
                        got += n;
                        if !got.is_multiple_of(ALIGN) {
                            break; // short: the rest is read buffered
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        log::debug!(
                            "{}: O_DIRECT refused ({e}); reading buffered",
                            self.path.display()
                        );
                        self.direct = None;
                        break;
                    }
                    Err(e) => return Err(self.error(e)),
                }
            }
        }
        while got < len {
            match self
                .buffered
                .read_at(&mut buf[start + got..start + len], offset + got as u64)
            {
                Ok(0) => return Err(self.error(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        // A direct read may have got more: the file grew since its size was taken.
        Ok(ChunkBuf { buf, start, len })
    }

    fn error(&self, e: io::Error) -> Error {
        Error::io(format!("read {}", self.path.display()), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let path = dir.join("img");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    /// Under /var/tmp: a disk file system, where O_DIRECT is there to be tested.
    fn scratch(name: &str) -> PathBuf {
        let d = PathBuf::from("/var/tmp")
            .join(format!("pbsfs-image-read-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn chunks_read_direct_or_buffered_are_the_file_s_bytes_and_buffers_are_reused() {
        let dir = scratch("modes");
        // Three whole chunks and a tail that is no multiple of the alignment.
        let cs = 16384;
        let (path, data) = image(&dir, 3 * cs + 1000);
        for direct in [true, false] {
            let mut r = ImageReader::new(&path, File::open(&path).unwrap(), cs as u64);
            if direct {
                assert!(r.direct.is_some(), "O_DIRECT refused in /var/tmp");
            } else {
                r = r.without_direct();
            }
            let mut spare = Vec::new();
            let mut out = Vec::new();
            for i in 0..4 {
                let len = (data.len() - i * cs).min(cs);
                let c = r.read_chunk((i * cs) as u64, len, spare).unwrap();
                assert_eq!(c.data().as_ptr() as usize % ALIGN, 0);
                out.extend_from_slice(c.data());
                spare = c.buf;
            }
            assert_eq!(out, data, "direct: {direct}");
            assert_eq!(r.direct.is_some(), direct, "fell back to buffered reads");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_chunk_size_below_the_alignment_reads_buffered() {
        let dir = scratch("small");
        let (path, data) = image(&dir, 3000);
        let mut r = ImageReader::new(&path, File::open(&path).unwrap(), 1024);
        assert!(r.direct.is_none());
        let c = r.read_chunk(1024, 1024, Vec::new()).unwrap();
        assert_eq!(c.data(), &data[1024..2048]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_shrank_is_an_error_naming_it() {
        let dir = scratch("shrank");
        let (path, _) = image(&dir, 8192);
        for direct in [true, false] {
            let mut r = ImageReader::new(&path, File::open(&path).unwrap(), 8192);
            if !direct {
                r = r.without_direct();
            }
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(5000)
                .unwrap();
            let err = r
                .read_chunk(0, 8192, Vec::new())
                .err()
                .expect("short image");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
