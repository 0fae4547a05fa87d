//! The mount's read path: READs answered from shared, verified chunk buffers (a slice of
//! the cached chunk when the range lies in one, a copy when it spans two), buffers
//! recycled between chunks, readahead started by a handle's first READ. Content read
//! through the mount must equal what was backed up at every offset, for one reader and
//! for two sequential readers sharing the small default cache.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use crate::common::{pseudo_random, TempDir};
use crate::mount_util::*;

const MIB: usize = 1 << 20;
const CHUNK: u64 = 1 << 20;

/// Semi-compressible (zstd-encoded chunks): random with every other 8 KiB zeroed, and
/// one all-zero chunk (a chunk the buffers of others are reused for).
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut data = pseudo_random(len, seed);
    for block in data.chunks_mut(16 * 1024) {
        let half = block.len() / 2;
        block[half..].fill(0);
    }
    data[3 * MIB..4 * MIB].fill(0);
    data
}

fn drop_page_cache() {
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
}

#[test]
fn reads_at_any_offset_and_two_sequential_readers_get_the_backed_up_bytes() {
    let tmp = TempDir::new("read-path");
    let store = tmp.join("store");
    let ds = pbsfs::Datastore::create(&store, false).unwrap();
    // The last chunk is short: the stream ends inside it.
    let a = image(12 * MIB + 12_345, 21);
    let b = image(10 * MIB, 22);
    let mut spec = SnapSpec::vm("400", T1);
    spec.images = vec![("a.img", a.clone(), CHUNK), ("b.img", b.clone(), CHUNK)];
    make_snapshot(&ds, &spec);
    let m = Mounted::start(&store, &tmp.join("mnt"), &[]);
    let pa = m.path("vm/400/2024-05-02T08:11:33Z/a.img");
    let pb = m.path("vm/400/2024-05-02T08:11:33Z/b.img");

    // Random access first (no sequential reader before), across chunk boundaries.
    drop_page_cache();
    let f = File::open(&pa).unwrap();
    let c = CHUNK as usize;
    for (off, len) in [
        (5 * c - 100, 300),
        (c - 1, 2),
        (7 * c + 4096, 3 * c),
        (0, 1),
        (a.len() - 10, 100),
        (2 * c, c),
        (11 * c + 4000, 2 * c),
    ] {
        let mut buf = vec![0u8; len];
        let mut n = 0;
        while n < len {
            let k = f.read_at(&mut buf[n..], (off + n) as u64).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        let want = &a[off..(off + len).min(a.len())];
        assert!(buf[..n] == *want, "a.img at {off}+{len}");
    }
    drop(f);

    // Two sequential readers at once, each through its own handle, sharing the cache.
    for round in 0..2 {
        drop_page_cache();
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| fs::read(&pa).unwrap());
            let tb = s.spawn(|| fs::read(&pb).unwrap());
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert!(ra == a, "a.img read back differs (round {round})");
        assert!(rb == b, "b.img read back differs (round {round})");
    }
    m.unmount();
}

/// `kill -USR1` makes the mount log what it served (requests, content bytes, cache
/// hits and misses, chunks verified) and keep serving; unmounting logs it once more.
#[test]
fn sigusr1_logs_the_statistics_and_the_mount_keeps_serving() {
    let tmp = TempDir::new("read-stats");
    let store = tmp.join("store");
    let ds = pbsfs::Datastore::create(&store, false).unwrap();
    let a = image(6 * MIB, 31);
    let mut spec = SnapSpec::vm("401", T1);
    spec.images = vec![("a.img", a.clone(), CHUNK)];
    make_snapshot(&ds, &spec);
    let m = Mounted::start(&store, &tmp.join("mnt"), &[]);
    let pa = m.path("vm/401/2024-05-02T08:11:33Z/a.img");
    drop_page_cache();
    assert!(fs::read(&pa).unwrap() == a);
    let pid = m.child.as_ref().unwrap().id();
    let stats_lines = |m: &Mounted| {
        m.log_text()
            .lines()
            .filter(|l| l.contains("content bytes served"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        stats_lines(&m).is_empty(),
        "no statistics before the signal"
    );
    let kill = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(
        poll(10, || !stats_lines(&m).is_empty()),
        "no statistics line after SIGUSR1:\n{}",
        m.log_text()
    );
    let line = stats_lines(&m).remove(0);
    let number_after = |what: &str| -> u64 {
        let at = line
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {line}"))
            + what.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        number_after("content bytes served:"),
        a.len() as u64,
        "{line}"
    );
    let count_before = |what: &str| -> u64 {
        let at = line
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {line}"));
        line[..at]
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Six distinct 1 MiB chunks, each read and verified (by a reader or readahead).
    assert!(count_before(" chunks read and verified") >= 6, "{line}");
    assert!(
        count_before(" hits") + count_before(" misses") >= 6,
        "{line}"
    );
    assert!(number_after("requests served:") > 6, "{line}");
    // Still serving, then the final statistics at unmount.
    assert!(fs::read(&pa).unwrap() == a);
    let log = m.log.clone();
    m.unmount();
    let text = fs::read_to_string(log).unwrap();
    assert_eq!(text.matches("content bytes served").count(), 2, "{text}");
}
