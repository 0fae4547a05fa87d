//! What a pxar backup stores about a file besides its content: the ENTRY stat from
//! `lstat`/`fstat`, extended attributes (`user.`, `trusted.`, `security.`), POSIX ACLs
//! parsed from their `system.posix_acl_*` xattrs into pxar's ACL items (as the PBS
//! client's `process_acl` does), file capabilities (`security.capability`, FCAPS), and
//! for regular files and folders the `chattr` inode flags (in the ENTRY flags) and the
//! quota project id (QUOTA_PROJID), as the PBS client's `get_chattr` and
//! `get_quota_project_id` read them.

use std::os::unix::fs::MetadataExt;

use crate::pxar::encoder::{Acl, AclDefault, AclGroup, AclUser, Metadata, Xattr, ACL_NO_MASK};
use crate::pxar::format::{flags_from_chattr, Stat};
use crate::util::sys::{
    fs_magic, get_inode_flags, get_project_id, get_xattr, list_xattrs, XattrSource,
};

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT_NAME: &[u8] = b"system.posix_acl_default";
const FCAPS_NAME: &[u8] = b"security.capability";

// Tags of the kernel's `posix_acl_xattr_entry` (linux/posix_acl.h).
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const ACL_XATTR_VERSION: u32 = 2;

/// The file systems PBS reads quota project ids on (`f_type` of ext4, XFS, FUSE, ZFS).
const PROJID_FS_MAGICS: [i64; 4] = [0xef53, 0x5846_5342, 0x6573_5546, 0x2fc1_2fc1];

/// The ENTRY of a file, flags 0 (`metadata_of` adds the inode flags; FAT attributes are
/// not stored).
pub(super) fn stat_of(md: &std::fs::Metadata) -> Stat {
    Stat {
        mode: md.mode() as u64,
        flags: 0,
        uid: md.uid(),
        gid: md.gid(),
        mtime_secs: md.mtime(),
        mtime_nanos: md.mtime_nsec() as u32,
    }
}

/// Device numbers of `st_rdev` as glibc's `major()`/`minor()` compute them.
pub(super) fn device_numbers(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (major, minor)
}

/// Is this xattr stored as an XATTR item? (ACLs and capabilities have their own items.)
fn stored_as_xattr(name: &[u8]) -> bool {
    (name.starts_with(b"user.") || name.starts_with(b"trusted.") || name.starts_with(b"security."))
        && name != FCAPS_NAME
        && name.len() <= 255
}

/// The full metadata of a file. Attribute read failures are returned as text for the
/// caller to report; the metadata then holds what could be read.
pub(super) fn metadata_of(
    md: &std::fs::Metadata,
    src: XattrSource,
    problems: &mut Vec<String>,
) -> Metadata {
    let mut m = Metadata {
        stat: stat_of(md),
        ..Default::default()
    };
    // Only an open regular file or folder: PBS reads no flags through the O_PATH
    // descriptors of symlinks, devices, FIFOs and sockets.
    if let XattrSource::File(file) = src {
        if md.is_file() || md.is_dir() {
            inode_flags_of(file, &mut m, problems);
        }
    }
    let names = match list_xattrs(src) {
        Ok(n) => n,
        // A file system without xattrs.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return m,
        Err(e) => {
            problems.push(format!("extended attributes not read: {e}"));
            return m;
        }
    };
    let is_symlink = md.file_type().is_symlink();
    for name in names {
        let acl_kind = match &name[..] {
            ACL_ACCESS => Some(false),
            ACL_DEFAULT_NAME => Some(true),
            _ => None,
        };
        let wanted =
            (acl_kind.is_some() && !is_symlink) || name == FCAPS_NAME || stored_as_xattr(&name);
        if !wanted {
            continue;
        }
        let value = match get_xattr(src, &name) {
            Ok(Some(v)) => v,
            // Removed since it was listed.
            Ok(None) => continue,
            Err(e) => {
                problems.push(format!(
                    "extended attribute {:?} not read: {e}",
                    String::from_utf8_lossy(&name)
                ));
                continue;
            }
        };
        if let Some(default) = acl_kind {
            if default && !md.is_dir() {
                continue;
            }
            if let Err(why) = parse_acl(&value, default, &mut m.acl) {
                problems.push(format!(
                    "ACL {:?} not stored: {why}",
                    String::from_utf8_lossy(&name)
                ));
            }
        } else if name == FCAPS_NAME {
            m.fcaps = Some(value);
        } else {
            m.xattrs.push(Xattr { name, value });
        }
    }
    // A fixed order, whatever the file system lists first: the same tree gives the
    // same stream (and the same chunks).
    m.xattrs.sort();
    m
}

/// Does `e` mean the file system has no such attribute at all (PBS's
/// `errno_is_unsupported`)?
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY | libc::ENOTSUP | libc::EINVAL | libc::ENOSYS | libc::EBADF)
    )
}

/// Add the `chattr` flags of `file` to the ENTRY flags and its quota project id, when
/// non-zero on a file system PBS reads it on, to `m`.
fn inode_flags_of(file: &std::fs::File, m: &mut Metadata, problems: &mut Vec<String>) {
    match get_inode_flags(file) {
        Ok(fs_flags) => m.stat.flags |= flags_from_chattr(fs_flags),
        Err(e) if unsupported(&e) => {}
        Err(e) => problems.push(format!("file attributes (chattr) not read: {e}")),
    }
    match get_project_id(file) {
        Ok(0) => {}
        Ok(projid) => match fs_magic(file) {
            Ok(magic) if PROJID_FS_MAGICS.contains(&magic) => {
                m.quota_project_id = Some(projid as u64)
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("quota project id not read: {e}")),
        },
        Err(e) if unsupported(&e) => {}
        Err(e) => problems.push(format!("quota project id not read: {e}")),
    }
}

/// Parse a `system.posix_acl_*` value into pxar's ACL items, as the PBS client stores
/// them: named users and groups sorted; for the access ACL the group-obj permissions
/// only when a mask exists (otherwise they are the mode's group bits); for the default
/// ACL the four base permissions with `ACL_NO_MASK` for an absent one.
pub(super) fn parse_acl(raw: &[u8], default: bool, acl: &mut Acl) -> Result<(), String> {
    if raw.len() < 4 || !(raw.len() - 4).is_multiple_of(8) {
        return Err(format!("{} bytes is no ACL", raw.len()));
    }
    let version = u32::from_le_bytes(raw[..4].try_into().expect("4 bytes"));
    if version != ACL_XATTR_VERSION {
        return Err(format!("ACL version {version}"));
    }
    let (mut users, mut groups) = (Vec::new(), Vec::new());
    let (mut user_obj, mut group_obj, mut other, mut mask) = (None, None, None, None);
    for e in raw[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]) as u64 & 0o7;
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]) as u64;
        match tag {
            TAG_USER_OBJ => user_obj = Some(perm),
            TAG_GROUP_OBJ => group_obj = Some(perm),
            TAG_OTHER => other = Some(perm),
            TAG_MASK => mask = Some(perm),
            TAG_USER => users.push(AclUser {
                uid: id,
                perms: perm,
            }),
            TAG_GROUP => groups.push(AclGroup {
                gid: id,
                perms: perm,
            }),
            t => return Err(format!("unknown ACL tag {t:#x}")),
        }
    }
    users.sort();
    groups.sort();
    if default {
        if user_obj.is_some() || group_obj.is_some() || other.is_some() || mask.is_some() {
            acl.default = Some(AclDefault {
                user_obj: user_obj.unwrap_or(ACL_NO_MASK),
                group_obj: group_obj.unwrap_or(ACL_NO_MASK),
                other: other.unwrap_or(ACL_NO_MASK),
                mask: mask.unwrap_or(ACL_NO_MASK),
            });
        }
        acl.default_users = users;
        acl.default_groups = groups;
    } else {
        acl.group_obj = if mask.is_some() { group_obj } else { None };
        acl.users = users;
        acl.groups = groups;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl_bytes(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut b = 2u32.to_le_bytes().to_vec();
        for (t, p, id) in entries {
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
            b.extend_from_slice(&id.to_le_bytes());
        }
        b
    }

    #[test]
    fn acls_parse_as_the_pbs_client_stores_them() {
        let none = u32::MAX;
        let access = acl_bytes(&[
            (TAG_USER_OBJ, 6, none),
            (TAG_USER, 5, 1002),
            (TAG_USER, 7, 1001),
            (TAG_GROUP_OBJ, 4, none),
            (TAG_GROUP, 1, 50),
            (TAG_MASK, 7, none),
            (TAG_OTHER, 0, none),
        ]);
        let mut acl = Acl::default();
        parse_acl(&access, false, &mut acl).unwrap();
        assert_eq!(
            acl.users,
            [
                AclUser {
                    uid: 1001,
                    perms: 7
                },
                AclUser {
                    uid: 1002,
                    perms: 5
                }
            ]
        );
        assert_eq!(acl.groups, [AclGroup { gid: 50, perms: 1 }]);
        assert_eq!(acl.group_obj, Some(4));
        assert_eq!(acl.default, None);
        let default = acl_bytes(&[
            (TAG_USER_OBJ, 7, none),
            (TAG_OTHER, 5, none),
            (TAG_GROUP, 6, 9),
        ]);
        parse_acl(&default, true, &mut acl).unwrap();
        assert_eq!(
            acl.default,
            Some(AclDefault {
                user_obj: 7,
                group_obj: ACL_NO_MASK,
                other: 5,
                mask: ACL_NO_MASK
            })
        );
        assert_eq!(acl.default_groups, [AclGroup { gid: 9, perms: 6 }]);
        // Without a mask the group-obj permissions are the mode's: not stored.
        let mut plain = Acl::default();
        parse_acl(
            &acl_bytes(&[(TAG_USER_OBJ, 6, none), (TAG_GROUP_OBJ, 4, none)]),
            false,
            &mut plain,
        )
        .unwrap();
        assert_eq!(plain.group_obj, None);
        assert!(parse_acl(&[2, 0, 0, 0, 1], false, &mut plain).is_err());
        assert!(parse_acl(&acl_bytes(&[(0x40, 1, 0)]), false, &mut plain).is_err());
    }

    #[test]
    fn chattr_flags_map_to_the_pxar_entry_bits_and_back() {
        use crate::pxar::format::{flags_to_chattr, CHATTR_MASK};
        // (FS_*_FL of linux/fs.h, WITH_FLAG_* of the upstream pxar crate)
        let pairs: [(u32, u64); 10] = [
            (0x20, 0x1_0000),          // APPEND
            (0x80, 0x2_0000),          // NOATIME
            (0x4, 0x4_0000),           // COMPR
            (0x80_0000, 0x8_0000),     // NOCOW
            (0x40, 0x10_0000),         // NODUMP
            (0x1_0000, 0x20_0000),     // DIRSYNC
            (0x10, 0x40_0000),         // IMMUTABLE
            (0x8, 0x80_0000),          // SYNC
            (0x400, 0x100_0000),       // NOCOMP
            (0x2000_0000, 0x200_0000), // PROJINHERIT
        ];
        let (mut all_fs, mut all_entry) = (0, 0);
        for (fs, entry) in pairs {
            assert_eq!(flags_from_chattr(fs), entry, "FS flag {fs:#x}");
            assert_eq!(flags_to_chattr(entry), fs, "ENTRY flag {entry:#x}");
            all_fs |= fs;
            all_entry |= entry;
        }
        assert_eq!(flags_from_chattr(all_fs), all_entry);
        assert_eq!(flags_to_chattr(all_entry), all_fs);
        assert_eq!(CHATTR_MASK, all_fs);
        // Flags pxar does not store (ext4's EXTENTS and INDEX, CASEFOLD, VERITY) are
        // dropped; other ENTRY bits (FAT attributes) give no inode flag.
        assert_eq!(
            flags_from_chattr(0x8_0000 | 0x1000 | 0x4000_0000 | 0x10_0000),
            0
        );
        assert_eq!(flags_from_chattr(0x8_0000 | 0x40), 0x10_0000);
        assert_eq!(flags_to_chattr(0x2000 | 0x4000 | 0x8000 | 0x40), 0);
        assert_eq!(flags_to_chattr(0x8000 | 0x2_0000), 0x80);
    }

    /// A scratch folder on /var/tmp (ext4 on the test machines: it has inode flags).
    fn scratch(tag: &str) -> std::path::PathBuf {
        let d =
            std::path::PathBuf::from(format!("/var/tmp/pbsfs-meta-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn inode_flags_are_read_from_open_files_and_folders_only() {
        use crate::util::sys::{get_inode_flags, set_inode_flags};
        let dir = scratch("flags");
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let nodump_noatime = 0x40 | 0x80;
        for p in [&f, &sub] {
            let file = std::fs::File::open(p).unwrap();
            let cur = get_inode_flags(&file).unwrap();
            set_inode_flags(&file, cur | nodump_noatime).unwrap();
            let md = std::fs::symlink_metadata(p).unwrap();
            let mut problems = Vec::new();
            let m = metadata_of(&md, XattrSource::File(&file), &mut problems);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(m.stat.flags, 0x10_0000 | 0x2_0000, "{}", p.display());
            // No project quota set here: no QUOTA_PROJID item.
            assert_eq!(m.quota_project_id, None);
            // Through a path (how symlinks and devices are read) PBS reads no flags.
            let m = metadata_of(&md, XattrSource::NoFollow(p), &mut problems);
            assert_eq!(m.stat.flags, 0);
            set_inode_flags(&file, cur).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // glibc's makedev(major, minor).
        let makedev = |major: u64, minor: u64| {
            ((major & 0xffff_f000) << 32)
                | ((major & 0xfff) << 8)
                | ((minor & 0xffff_ff00) << 12)
                | (minor & 0xff)
        };
        assert_eq!(device_numbers(0x801), (8, 1));
        for (major, minor) in [(1, 3), (259, 65536), (0x12345, 0xabcdef)] {
            assert_eq!(device_numbers(makedev(major, minor)), (major, minor));
        }
    }
}
