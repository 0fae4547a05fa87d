//! Reading ahead of a cold listing. `ls -lR` visits snapshot folders one after another,
//! and each costs the mount two small reads the raw folders do not have: the manifest
//! (for the file list and the sizes of `notes` and `verify_state`) and each config blob
//! (for its decoded size). Cold, those are serial disk waits. When a group folder is
//! listed, its snapshots' manifests and small blobs are read here on a few threads, so
//! the disk serves them side by side and the listing finds them in the page cache.
//! (Queued when the group was first scanned instead, they were lost when the page cache
//! dropped them before the listing: `ls vm` then, later, `ls -lR` ran 3.4x the raw
//! folders' time, against 1.4-1.5x now.)
//!
//! Only the page cache is warmed: nothing read here is kept or trusted, and every read
//! goes through `StoreRoot` (no symlink followed, no FIFO opened blocking, sizes checked
//! before reading). Jobs that do not fit the queue are dropped: this is a hint.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::root::StoreRoot;

/// Threads reading: the reads wait on the disk, not the CPU, so more than the cores.
const THREADS: usize = 4;
/// Snapshot folders queued at most (a path each): a group of 10,000 snapshots queues
/// them all when listed. Listed again, a group queues them again: reading a few KiB
/// that the page cache holds costs the background threads four syscalls a file.
const QUEUE: usize = 16_384;
/// Larger files are not read ahead (a manifest or config is a few KiB; a big log blob
/// is read when someone opens it).
const MAX_WARM_FILE: u64 = 256 << 10;

#[derive(Debug)]
pub(super) struct Warmer {
    tx: SyncSender<PathBuf>,
}

impl Warmer {
    /// Start the readers on `fs`; they end when the `Warmer` goes.
    pub(super) fn new(fs: StoreRoot) -> Warmer {
        let (tx, rx) = sync_channel::<PathBuf>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let (rx, fs) = (Arc::clone(&rx), fs.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("pbsfs-warm-{i}"))
                .spawn(move || serve(&rx, &fs));
            if let Err(e) = spawned {
                log::debug!("no listing readahead thread: {e}");
            }
        }
        Warmer { tx }
    }

    /// Read snapshot folder `snapshot`'s manifest and small blobs into the page cache.
    pub(super) fn queue(&self, snapshot: PathBuf) {
        let _ = self.tx.try_send(snapshot);
    }
}

fn serve(rx: &Mutex<Receiver<PathBuf>>, fs: &StoreRoot) {
    loop {
        let job = rx.lock().recv();
        match job {
            Ok(p) => warm(fs, &p),
            Err(_) => return,
        }
    }
}

fn warm(fs: &StoreRoot, snapshot: &Path) {
    let Ok(Some(listing)) = fs.read_dir(snapshot) else {
        return;
    };
    for name in listing.names() {
        let Some(n) = name.to_str() else { continue };
        // The manifest (`index.json.blob`) and the config blobs.
        if n.ends_with(".blob") && !n.starts_with('.') {
            // Errors are the later real read's to report.
            let _ = fs.read(&snapshot.join(n), MAX_WARM_FILE);
        }
    }
}
