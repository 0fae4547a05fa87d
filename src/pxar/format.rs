//! The pxar wire format (spec §7.1) as constants and small pure types: item headers,
//! the ENTRY stat, the SipHash-2-4 that names item types and hashes file names, and the
//! goodbye table's exact order (a sorted array laid out as a complete binary tree in
//! Eytzinger order). Shared by the decoder and the encoder; no I/O here.

/// SipHash-2-4 keys: the first 16 bytes of `sha1("PROXMOX ARCHIVE FORMAT")`.
pub const HASH_KEY_0: u64 = 0x83ac3f1cfbb450db;
pub const HASH_KEY_1: u64 = 0xaa4f1b6879369fbd;

pub const FORMAT_VERSION: u64 = 0x730f6c75df16a40d;
pub const ENTRY: u64 = 0xd5956474e588acef;
pub const ENTRY_V1: u64 = 0x11da850a1c1cceff;
pub const PRELUDE: u64 = 0xe309d79d9f7b771b;
pub const FILENAME: u64 = 0x16701121063917b3;
pub const SYMLINK: u64 = 0x27f971e7dbf5dc5f;
pub const DEVICE: u64 = 0x9fc9e906586d5ce9;
pub const XATTR: u64 = 0x0dab0229b57dcd03;
pub const ACL_USER: u64 = 0x2ce8540a457d55b8;
pub const ACL_GROUP: u64 = 0x136e3eceb04c03ab;
pub const ACL_GROUP_OBJ: u64 = 0x10868031e9582876;
pub const ACL_DEFAULT: u64 = 0xbbbb13415a6896f5;
pub const ACL_DEFAULT_USER: u64 = 0xc89357b40532cd1f;
pub const ACL_DEFAULT_GROUP: u64 = 0xf90a8a5816038ffe;
pub const FCAPS: u64 = 0x2da9dd9db5f7fb67;
pub const QUOTA_PROJID: u64 = 0xe07540e82f7d1cbb;
pub const HARDLINK: u64 = 0x51269c8422bd7275;
pub const PAYLOAD: u64 = 0x28147a1b0b7c1a25;
pub const PAYLOAD_REF: u64 = 0x419d3d6bc4ba977e;
pub const GOODBYE: u64 = 0x2fec4fa642d5731d;
pub const GOODBYE_TAIL_MARKER: u64 = 0xef5eed5b753e1555;
pub const PAYLOAD_START_MARKER: u64 = 0x834c68c2194a4ed2;
pub const PAYLOAD_TAIL_MARKER: u64 = 0x6c72b78b984c81b5;

/// Every item starts with `htype: u64, full_size: u64` (the size includes the header).
pub const HEADER_SIZE: u64 = 16;
/// The ENTRY content: mode, flags, uid, gid, mtime {secs i64, nanos u32, pad u32}.
pub const ENTRY_SIZE: u64 = 40;
/// The ENTRY_V1 content: mode, flags, uid, gid, mtime as u64 nanoseconds.
pub const ENTRY_V1_SIZE: u64 = 32;
/// One goodbye item: hash, offset, size.
pub const GOODBYE_ITEM_SIZE: u64 = 24;
/// A FILENAME's content (name + NUL) is at most this long.
pub const MAX_FILENAME_SIZE: u64 = 4097;
/// A path inside an archive (symlink targets, hardlink targets) is at most this long.
pub const MAX_PATH_SIZE: u64 = 4096;
/// An XATTR's content (name + NUL + value) is at most this long.
pub const MAX_XATTR_SIZE: u64 = 255 + 1 + 64 * 1024;

/// File type bits of `Stat::mode` (pxar's fixed values, equal to Linux's).
pub const S_IFMT: u64 = 0o170000;
pub const S_IFSOCK: u64 = 0o140000;
pub const S_IFLNK: u64 = 0o120000;
pub const S_IFREG: u64 = 0o100000;
pub const S_IFBLK: u64 = 0o060000;
pub const S_IFDIR: u64 = 0o040000;
pub const S_IFCHR: u64 = 0o020000;
pub const S_IFIFO: u64 = 0o010000;

/// An item header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub htype: u64,
    pub full_size: u64,
}

impl Header {
    pub fn parse(b: &[u8; 16]) -> Header {
        Header {
            htype: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            full_size: u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.htype.to_le_bytes());
        b[8..].copy_from_slice(&self.full_size.to_le_bytes());
        b
    }

    /// The content size; `None` when `full_size` is smaller than a header.
    pub fn content_size(self) -> Option<u64> {
        self.full_size.checked_sub(HEADER_SIZE)
    }
}

/// The ENTRY of a file: its type and permission bits, flags, owner and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stat {
    pub mode: u64,
    pub flags: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

impl Stat {
    /// Parse an ENTRY (40 bytes) or, `v1`, an ENTRY_V1 (32 bytes) content.
    pub fn parse(b: &[u8], v1: bool) -> Option<Stat> {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let want = if v1 { ENTRY_V1_SIZE } else { ENTRY_SIZE } as usize;
        if b.len() != want {
            return None;
        }
        let (mtime_secs, mtime_nanos) = if v1 {
            let ns = u64_at(24);
            ((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
        } else {
            let nanos = u32_at(32);
            if nanos >= 1_000_000_000 {
                return None;
            }
            (u64_at(24) as i64, nanos)
        };
        Some(Stat {
            mode: u64_at(0),
            flags: u64_at(8),
            uid: u32_at(16),
            gid: u32_at(20),
            mtime_secs,
            mtime_nanos,
        })
    }

    /// The ENTRY content (40 bytes) pxar 1.0.0 writes.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.mode.to_le_bytes());
        b[8..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.uid.to_le_bytes());
        b[20..24].copy_from_slice(&self.gid.to_le_bytes());
        b[24..32].copy_from_slice(&self.mtime_secs.to_le_bytes());
        b[32..36].copy_from_slice(&self.mtime_nanos.to_le_bytes());
        b
    }

    pub fn file_type(&self) -> u64 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    pub fn is_regular(&self) -> bool {
        self.file_type() == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }

    pub fn is_device(&self) -> bool {
        matches!(self.file_type(), S_IFBLK | S_IFCHR)
    }

    /// FIFOs and sockets carry no content item.
    pub fn is_fifo_or_socket(&self) -> bool {
        matches!(self.file_type(), S_IFIFO | S_IFSOCK)
    }

    /// The permission bits with setuid, setgid and sticky.
    pub fn permissions(&self) -> u32 {
        (self.mode & 0o7777) as u32
    }
}

/// ENTRY `flags`: the Linux inode flags (`chattr`) pxar stores, with the values of the
/// upstream pxar crate's feature flags (`WITH_FLAG_*`), each standing for one
/// `FS_*_FL` bit of linux/fs.h.
pub const WITH_FLAG_APPEND: u64 = 0x0001_0000;
pub const WITH_FLAG_NOATIME: u64 = 0x0002_0000;
pub const WITH_FLAG_COMPR: u64 = 0x0004_0000;
pub const WITH_FLAG_NOCOW: u64 = 0x0008_0000;
pub const WITH_FLAG_NODUMP: u64 = 0x0010_0000;
pub const WITH_FLAG_DIRSYNC: u64 = 0x0020_0000;
pub const WITH_FLAG_IMMUTABLE: u64 = 0x0040_0000;
pub const WITH_FLAG_SYNC: u64 = 0x0080_0000;
pub const WITH_FLAG_NOCOMP: u64 = 0x0100_0000;
pub const WITH_FLAG_PROJINHERIT: u64 = 0x0200_0000;

/// The kernel's inode flags (`FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS`, linux/fs.h).
pub const FS_APPEND_FL: u32 = 0x0000_0020;
pub const FS_NOATIME_FL: u32 = 0x0000_0080;
pub const FS_COMPR_FL: u32 = 0x0000_0004;
pub const FS_NOCOW_FL: u32 = 0x0080_0000;
pub const FS_NODUMP_FL: u32 = 0x0000_0040;
pub const FS_DIRSYNC_FL: u32 = 0x0001_0000;
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
pub const FS_SYNC_FL: u32 = 0x0000_0008;
pub const FS_NOCOMP_FL: u32 = 0x0000_0400;
pub const FS_PROJINHERIT_FL: u32 = 0x2000_0000;

/// (ENTRY flag, inode flag) pairs, in the upstream order.
pub const CHATTR_MAP: [(u64, u32); 10] = [
    (WITH_FLAG_APPEND, FS_APPEND_FL),
    (WITH_FLAG_NOATIME, FS_NOATIME_FL),
    (WITH_FLAG_COMPR, FS_COMPR_FL),
    (WITH_FLAG_NOCOW, FS_NOCOW_FL),
    (WITH_FLAG_NODUMP, FS_NODUMP_FL),
    (WITH_FLAG_DIRSYNC, FS_DIRSYNC_FL),
    (WITH_FLAG_IMMUTABLE, FS_IMMUTABLE_FL),
    (WITH_FLAG_SYNC, FS_SYNC_FL),
    (WITH_FLAG_NOCOMP, FS_NOCOMP_FL),
    (WITH_FLAG_PROJINHERIT, FS_PROJINHERIT_FL),
];

/// Every inode flag pxar stores: what a restore sets or clears (other bits of the
/// file, such as ext4's EXTENTS, are kept).
pub const CHATTR_MASK: u32 = FS_APPEND_FL
    | FS_NOATIME_FL
    | FS_COMPR_FL
    | FS_NOCOW_FL
    | FS_NODUMP_FL
    | FS_DIRSYNC_FL
    | FS_IMMUTABLE_FL
    | FS_SYNC_FL
    | FS_NOCOMP_FL
    | FS_PROJINHERIT_FL;

/// The inode flags PBS's extractor sets right after creating a file, before its
/// content (NOCOW and compression only take effect on an empty file).
pub const INITIAL_FS_FLAGS: u32 =
    FS_NOATIME_FL | FS_COMPR_FL | FS_NOCOW_FL | FS_NOCOMP_FL | FS_PROJINHERIT_FL;

/// The ENTRY flags for inode flags `fs_flags` (bits pxar does not store are dropped).
pub fn flags_from_chattr(fs_flags: u32) -> u64 {
    CHATTR_MAP
        .iter()
        .filter(|(_, fs)| fs_flags & fs != 0)
        .fold(0, |acc, (entry, _)| acc | entry)
}

/// The inode flags for ENTRY flags `flags` (other ENTRY bits are ignored).
pub fn flags_to_chattr(flags: u64) -> u32 {
    CHATTR_MAP
        .iter()
        .filter(|(entry, _)| flags & entry != 0)
        .fold(0, |acc, (_, fs)| acc | fs)
}

/// SipHash-2-4 with pxar's keys: item type constants and goodbye hashes of file names.
pub fn hash(data: &[u8]) -> u64 {
    siphash24(HASH_KEY_0, HASH_KEY_1, data)
}

/// SipHash-2-4 (Aumasson & Bernstein), 64-bit output.
pub fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v0 = k0 ^ 0x736f6d6570736575;
    let mut v1 = k1 ^ 0x646f72616e646f6d;
    let mut v2 = k0 ^ 0x6c7967656e657261;
    let mut v3 = k1 ^ 0x7465646279746573;
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    };
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let m = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let rest = blocks.remainder();
    let mut last = (data.len() as u64) << 56;
    for (i, b) in rest.iter().enumerate() {
        last |= (*b as u64) << (8 * i);
    }
    v3 ^= last;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= last;
    v2 ^= 0xff;
    for _ in 0..4 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

/// One goodbye item: a child's name hash, the distance from the GOODBYE header back to
/// the child's FILENAME header, and the child's size including its FILENAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoodbyeItem {
    pub hash: u64,
    pub offset: u64,
    pub size: u64,
}

impl GoodbyeItem {
    pub fn parse(b: &[u8]) -> GoodbyeItem {
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        GoodbyeItem {
            hash: u(0),
            offset: u(8),
            size: u(16),
        }
    }

    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// The Eytzinger layout of `n` sorted items (spec §7.1): `order[i]` is the index in
/// the sorted list of the item stored at array position i. Position i has children
/// 2i+1 and 2i+2; the tree is complete (filled level by level, the last level from the
/// left), so an in-order walk visits the items sorted.
pub fn goodbye_order(n: usize) -> Vec<usize> {
    let mut order = vec![0usize; n];
    let mut next = 0usize;
    // In-order walk of the implicit complete tree, iteratively (no recursion depth
    // bound by the input).
    let mut stack = Vec::new();
    let mut i = 0usize;
    loop {
        while i < n {
            stack.push(i);
            i = 2 * i + 1;
        }
        let Some(top) = stack.pop() else {
            break;
        };
        order[top] = next;
        next += 1;
        i = 2 * top + 2;
    }
    order
}

/// Arrange `items` (any order) as the goodbye table writes them: sorted by hash, then
/// in Eytzinger order.
pub fn goodbye_table(mut items: Vec<GoodbyeItem>) -> Vec<GoodbyeItem> {
    items.sort_by_key(|it| it.hash);
    goodbye_order(items.len())
        .into_iter()
        .map(|sorted| items[sorted])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_constants_are_the_siphash_of_their_markers() {
        let m = |s: &str| format!("__PROXMOX_FORMAT_{s}__");
        for (marker, value) in [
            (m("VERSION"), FORMAT_VERSION),
            (m("ENTRY_V2"), ENTRY),
            (m("ENTRY"), ENTRY_V1),
            (m("PRELUDE"), PRELUDE),
            (m("FILENAME"), FILENAME),
            (m("SYMLINK"), SYMLINK),
            (m("DEVICE"), DEVICE),
            (m("XATTR"), XATTR),
            (m("ACL_USER"), ACL_USER),
            (m("ACL_GROUP"), ACL_GROUP),
            (m("ACL_GROUP_OBJ"), ACL_GROUP_OBJ),
            (m("ACL_DEFAULT"), ACL_DEFAULT),
            (m("ACL_DEFAULT_USER"), ACL_DEFAULT_USER),
            (m("ACL_DEFAULT_GROUP"), ACL_DEFAULT_GROUP),
            (m("FCAPS"), FCAPS),
            (m("QUOTA_PROJID"), QUOTA_PROJID),
            (m("HARDLINK"), HARDLINK),
            (m("PXAR_PAYLOAD"), PAYLOAD),
            (m("PXAR_PAYLOAD_REF"), PAYLOAD_REF),
            (m("GOODBYE"), GOODBYE),
            (m("PXAR_GOODBYE_TAIL_MARKER"), GOODBYE_TAIL_MARKER),
            (m("PXAR_PAYLOAD_START_MARKER"), PAYLOAD_START_MARKER),
            (m("PXAR_PAYLOAD_TAIL_MARKER"), PAYLOAD_TAIL_MARKER),
        ] {
            assert_eq!(hash(marker.as_bytes()), value, "{marker}");
        }
    }

    #[test]
    fn goodbye_tables_follow_the_spec_vectors() {
        assert_eq!(goodbye_order(5), [3, 1, 4, 0, 2]);
        let sorted = [0u64, 1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8, 8, 8];
        let laid: Vec<u64> = goodbye_order(sorted.len())
            .into_iter()
            .map(|i| sorted[i])
            .collect();
        assert_eq!(laid, [5, 2, 8, 1, 3, 6, 8, 0, 2, 2, 4, 6, 7, 8]);
    }

    /// An independent construction: the recursive definition (the root of a complete
    /// tree of n nodes is the size of its left subtree).
    fn by_recursion(sorted: &[usize], out: &mut [usize], pos: usize) {
        if sorted.is_empty() {
            return;
        }
        let n = sorted.len();
        // h levels below the root; the levels above the last hold 2^h - 1 nodes.
        let h = usize::BITS - n.leading_zeros() - 1;
        let left = if h == 0 {
            0
        } else {
            let half = 1usize << (h - 1);
            let on_last_level = n - ((1usize << h) - 1);
            (half - 1) + on_last_level.min(half)
        };
        out[pos] = sorted[left];
        if 2 * pos + 1 < out.len() {
            by_recursion(&sorted[..left], out, 2 * pos + 1);
        }
        if 2 * pos + 2 < out.len() {
            by_recursion(&sorted[left + 1..], out, 2 * pos + 2);
        }
    }

    #[test]
    fn goodbye_order_equals_an_independent_construction_for_1_to_64() {
        for n in 1..=64usize {
            let sorted: Vec<usize> = (0..n).collect();
            let mut want = vec![usize::MAX; n];
            by_recursion(&sorted, &mut want, 0);
            assert_eq!(goodbye_order(n), want, "n = {n}");
            // And a search by value finds every item.
            let laid = goodbye_order(n);
            for v in 0..n {
                let mut i = 0;
                loop {
                    assert!(i < n, "n = {n}: {v} not found");
                    match v.cmp(&laid[i]) {
                        std::cmp::Ordering::Equal => break,
                        std::cmp::Ordering::Less => i = 2 * i + 1,
                        std::cmp::Ordering::Greater => i = 2 * i + 2,
                    }
                }
            }
        }
    }

    #[test]
    fn entries_round_trip() {
        let s = Stat {
            mode: S_IFREG | 0o4755,
            flags: 0,
            uid: 1000,
            gid: 100,
            mtime_secs: -5,
            mtime_nanos: 123_456_789,
        };
        assert_eq!(Stat::parse(&s.to_bytes(), false), Some(s));
        assert_eq!(s.permissions(), 0o4755);
        let mut v1 = [0u8; 32];
        v1[..8].copy_from_slice(&(S_IFDIR | 0o755).to_le_bytes());
        v1[24..32].copy_from_slice(&1_500_000_000_123u64.to_le_bytes());
        let p = Stat::parse(&v1, true).unwrap();
        assert!(p.is_dir());
        assert_eq!((p.mtime_secs, p.mtime_nanos), (1500, 123));
        let mut bad = s.to_bytes();
        bad[32..36].copy_from_slice(&2_000_000_000u32.to_le_bytes());
        assert_eq!(Stat::parse(&bad, false), None);
    }
}
