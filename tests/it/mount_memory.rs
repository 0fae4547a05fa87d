//! The mount's memory stays flat with what is read: cold reads of an image of distinct
//! 4 MiB chunks through a mount with the default chunk cache, in two equal rounds. The
//! resident size after them is bounded by the cache (24 MiB by default) plus working
//! buffers, not by how much was read: the old 256 MiB default kept all 96 MiB read here.

use std::fs;

use crate::common::{pseudo_random, TempDir};
use crate::mount_util::*;

const MIB: u64 = 1 << 20;
/// 24 distinct chunks of PBS's default size: four times the default cache.
const IMAGE: usize = 96 << 20;
const CHUNK: u64 = 4 << 20;
/// Reads of the whole image per round.
const READS_PER_ROUND: usize = 2;
/// What a second, equal round may add to the resident size (allocator noise).
const ROUND_MARGIN: u64 = 16 * MIB;
/// Above the idle mount's resident size after the reads: the 24 MiB cache, the chunks
/// being read and decoded, READ buffers and kept free heap came to 31-35 MiB. A cache
/// that keeps everything read (the old 256 MiB default) came to about 104 MiB, and
/// glibc's default allocator policy (freed chunk buffers kept in growing heaps) to 73-84.
const GROWTH_BOUND: u64 = 60 * MIB;

/// `VmRSS` of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"));
    kib * 1024
}

/// Drop the page cache, so the next read of the image goes to the mount.
fn drop_page_cache() {
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
}

/// Semi-compressible content (zstd path and stored-raw path both used): random with
/// every other 16 KiB zeroed in the first half.
fn image() -> Vec<u8> {
    let mut data = pseudo_random(IMAGE, 11);
    for block in data[..IMAGE / 2].chunks_mut(32 * 1024) {
        block[16 * 1024..].fill(0);
    }
    data
}

#[test]
fn cold_reads_leave_the_resident_size_bounded_by_the_cache_not_by_what_was_read() {
    let tmp = TempDir::new("mount-memory");
    let store = tmp.join("store");
    let ds = pbsfs::Datastore::create(&store, false).unwrap();
    let data = image();
    let mut spec = SnapSpec::vm("300", T1);
    spec.images = vec![("drive-scsi0.img", data.clone(), CHUNK)];
    make_snapshot(&ds, &spec);
    let m = Mounted::start(&store, &tmp.join("mnt"), &[]);
    let pid = m.child.as_ref().unwrap().id();
    let file = m.path("vm/300/2024-05-02T08:11:33Z/drive-scsi0.img");
    // The base line: the mount serving, before any READ.
    assert_eq!(fs::metadata(&file).unwrap().len(), IMAGE as u64);
    let idle = rss(pid);
    let round = || {
        for _ in 0..READS_PER_ROUND {
            drop_page_cache();
            assert!(
                fs::read(&file).unwrap() == data,
                "content read back differs"
            );
        }
        rss(pid)
    };
    let first = round();
    let second = round();
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "mount RSS: idle {:.1} MiB, after round 1 {:.1} MiB, after round 2 {:.1} MiB",
        mib(idle),
        mib(first),
        mib(second)
    );
    assert!(
        second <= first + ROUND_MARGIN,
        "RSS grew from {:.1} to {:.1} MiB in an equal second round (margin {} MiB)",
        mib(first),
        mib(second),
        ROUND_MARGIN / MIB
    );
    for (n, after) in [(1, first), (2, second)] {
        assert!(
            after <= idle + GROWTH_BOUND,
            "RSS after round {n} is {:.1} MiB, {:.1} MiB above the idle {:.1} MiB (bound {} \
             MiB): the chunk cache or the allocator keeps what was read",
            mib(after),
            mib(after - idle.min(after)),
            mib(idle),
            GROWTH_BOUND / MIB
        );
    }
    m.unmount();
}
