//! What an ENTRY and its attribute items carry: the stat, extended attributes, the
//! POSIX ACL in pxar's records, file capabilities and the quota project id, and how the
//! encoder writes them (in the spec's item order).

use std::io::Write;

use super::Encoder;
pub use crate::pxar::acl::{Acl, AclDefault, AclGroup, AclUser, ACL_NO_MASK};
use crate::pxar::format::{
    Stat, ACL_DEFAULT, ACL_DEFAULT_GROUP, ACL_DEFAULT_USER, ACL_GROUP, ACL_GROUP_OBJ, ACL_USER,
    ENTRY, FCAPS, MAX_XATTR_SIZE, QUOTA_PROJID, XATTR,
};
use crate::util::error::{Error, Result};

/// One extended attribute (never `system.posix_acl_*` or `security.capability`: those
/// are the ACL and FCAPS items).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Everything an ENTRY and its attribute items carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub stat: Stat,
    pub xattrs: Vec<Xattr>,
    pub acl: Acl,
    pub fcaps: Option<Vec<u8>>,
    pub quota_project_id: Option<u64>,
}

impl<W: Write, P: Write> Encoder<W, P> {
    /// ENTRY, XATTR*, ACL_USER*, ACL_GROUP*, ACL_GROUP_OBJ?, ACL_DEFAULT?,
    /// ACL_DEFAULT_USER*, ACL_DEFAULT_GROUP*, FCAPS?, QUOTA_PROJID?.
    pub(super) fn write_metadata(&mut self, m: &Metadata) -> Result<()> {
        self.item(ENTRY, &[&m.stat.to_bytes()])?;
        for x in &m.xattrs {
            let size = (x.name.len() + 1 + x.value.len()) as u64;
            if x.name.is_empty() || x.name.len() > 255 || x.name.contains(&0) {
                return Err(Error::invalid(
                    format!("xattr {:?}", String::from_utf8_lossy(&x.name)),
                    "not a valid attribute name",
                ));
            }
            if size > MAX_XATTR_SIZE {
                return Err(Error::TooLarge {
                    what: format!("xattr {:?}", String::from_utf8_lossy(&x.name)),
                    size,
                    limit: MAX_XATTR_SIZE,
                });
            }
            self.item(XATTR, &[&x.name, &[0], &x.value])?;
        }
        let a = &m.acl;
        for u in &a.users {
            self.u64s(ACL_USER, &[u.uid, u.perms])?;
        }
        for g in &a.groups {
            self.u64s(ACL_GROUP, &[g.gid, g.perms])?;
        }
        if let Some(p) = a.group_obj {
            self.u64s(ACL_GROUP_OBJ, &[p])?;
        }
        if let Some(d) = a.default {
            self.u64s(ACL_DEFAULT, &[d.user_obj, d.group_obj, d.other, d.mask])?;
        }
        for u in &a.default_users {
            self.u64s(ACL_DEFAULT_USER, &[u.uid, u.perms])?;
        }
        for g in &a.default_groups {
            self.u64s(ACL_DEFAULT_GROUP, &[g.gid, g.perms])?;
        }
        if let Some(f) = &m.fcaps {
            self.item(FCAPS, &[f])?;
        }
        if let Some(p) = m.quota_project_id {
            self.u64s(QUOTA_PROJID, &[p])?;
        }
        Ok(())
    }
}
