//! What an ENTRY and its attribute items carry: the stat, extended attributes, the
//! POSIX ACL in pxar's records, file capabilities and the quota project id.

pub use crate::pxar::acl::{Acl, AclDefault, AclGroup, AclUser, ACL_NO_MASK};
use crate::pxar::format::Stat;

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
