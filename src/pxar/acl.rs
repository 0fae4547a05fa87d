//! POSIX ACLs between pxar's ACL items and the kernel's `system.posix_acl_access` /
//! `system.posix_acl_default` xattr values: what the mount shows `getfacl` and what
//! restore writes back.

use crate::pxar::format::Stat;

/// The permission of an absent entry in `AclDefault` (pxar's `NO_MASK`).
pub const ACL_NO_MASK: u64 = u64::MAX;

/// ACL_USER (and ACL_DEFAULT_USER) record: a named user's permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclUser {
    pub uid: u64,
    pub perms: u64,
}

/// ACL_GROUP (and ACL_DEFAULT_GROUP) record: a named group's permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclGroup {
    pub gid: u64,
    pub perms: u64,
}

/// ACL_DEFAULT: a directory's default ACL base entries (`ACL_NO_MASK` where absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclDefault {
    pub user_obj: u64,
    pub group_obj: u64,
    pub other: u64,
    pub mask: u64,
}

/// A POSIX ACL as pxar stores it: the named entries, the group-obj permissions when a
/// mask exists (the mask itself lives in the mode's group bits), the default ACL. One
/// type for the encoder, the decoder, the mount and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub users: Vec<AclUser>,
    pub groups: Vec<AclGroup>,
    pub group_obj: Option<u64>,
    pub default: Option<AclDefault>,
    pub default_users: Vec<AclUser>,
    pub default_groups: Vec<AclGroup>,
}

impl Acl {
    pub fn is_empty(&self) -> bool {
        *self == Acl::default()
    }
}

// The kernel's POSIX ACL xattr format: a version (2), then {tag u16, perm u16, id u32}.
const ACL_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

fn acl_xattr(mut entries: Vec<(u16, u16, u32)>) -> Vec<u8> {
    entries.sort();
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The access ACL, when the entry has one beyond its mode bits. With an extended ACL
/// the mode's group bits are the mask (as in `stat`), and GROUP_OBJ holds the group.
pub fn access_xattr(stat: &Stat, acl: &Acl) -> Option<Vec<u8>> {
    if acl.users.is_empty() && acl.groups.is_empty() && acl.group_obj.is_none() {
        return None;
    }
    let mode = stat.mode;
    let mut e = vec![
        (ACL_USER_OBJ, ((mode >> 6) & 7) as u16, ACL_UNDEFINED_ID),
        (ACL_MASK, ((mode >> 3) & 7) as u16, ACL_UNDEFINED_ID),
        (ACL_OTHER, (mode & 7) as u16, ACL_UNDEFINED_ID),
        (
            ACL_GROUP_OBJ,
            acl.group_obj.unwrap_or((mode >> 3) & 7) as u16,
            ACL_UNDEFINED_ID,
        ),
    ];
    e.extend(
        acl.users
            .iter()
            .map(|u| (ACL_USER, u.perms as u16, u.uid as u32)),
    );
    e.extend(
        acl.groups
            .iter()
            .map(|g| (ACL_GROUP, g.perms as u16, g.gid as u32)),
    );
    Some(acl_xattr(e))
}

/// The default ACL of a directory, when it has one.
pub fn default_xattr(acl: &Acl) -> Option<Vec<u8>> {
    let d = acl.default.as_ref()?;
    let mut e = vec![
        (ACL_USER_OBJ, d.user_obj as u16, ACL_UNDEFINED_ID),
        (ACL_GROUP_OBJ, d.group_obj as u16, ACL_UNDEFINED_ID),
        (ACL_OTHER, d.other as u16, ACL_UNDEFINED_ID),
    ];
    if d.mask != ACL_NO_MASK {
        e.push((ACL_MASK, d.mask as u16, ACL_UNDEFINED_ID));
    }
    e.extend(
        acl.default_users
            .iter()
            .map(|u| (ACL_USER, u.perms as u16, u.uid as u32)),
    );
    e.extend(
        acl.default_groups
            .iter()
            .map(|g| (ACL_GROUP, g.perms as u16, g.gid as u32)),
    );
    Some(acl_xattr(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pxar::format;

    #[test]
    fn an_extended_acl_reads_back_in_the_kernels_layout() {
        let stat = Stat {
            mode: format::S_IFREG | 0o640,
            ..Stat::default()
        };
        let acl = Acl {
            users: vec![AclUser {
                uid: 1000,
                perms: 6,
            }],
            group_obj: Some(4),
            ..Acl::default()
        };
        let v = access_xattr(&stat, &acl).unwrap();
        assert_eq!(&v[..4], &2u32.to_le_bytes());
        // user_obj rw-, user 1000 rw-, group_obj r--, mask r-- (mode group bits), other.
        let entries: Vec<(u16, u16, u32)> = v[4..]
            .chunks(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    u16::from_le_bytes([c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (ACL_USER_OBJ, 6, u32::MAX),
                (ACL_USER, 6, 1000),
                (ACL_GROUP_OBJ, 4, u32::MAX),
                (ACL_MASK, 4, u32::MAX),
                (ACL_OTHER, 0, u32::MAX)
            ]
        );
        assert!(access_xattr(&stat, &Acl::default()).is_none());
    }
}
