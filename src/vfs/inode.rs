//! The inode table: the only inode state of the mount. A node key (a path-like identity,
//! see `node.rs`) gets a number the first time it is seen and keeps it for the life of
//! the mount, so `ls -i` is stable and a key that includes content identity (an archive's
//! checksum, a snapshot folder's inode) never aliases older cached pages.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::node::Node;

/// The FUSE root inode.
pub const ROOT_INO: u64 = 1;

/// Key <-> number, both directions. Entries are never removed: numbers must stay stable
/// even after the kernel forgets an inode, and a key is small (a few path components).
#[derive(Debug)]
pub struct InodeTable {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    by_key: HashMap<Node, u64>,
    by_ino: HashMap<u64, Node>,
    next: u64,
}

impl InodeTable {
    /// A table whose root (`ROOT_INO`) is `root`.
    pub fn new(root: Node) -> InodeTable {
        let mut by_key = HashMap::new();
        let mut by_ino = HashMap::new();
        by_key.insert(root.clone(), ROOT_INO);
        by_ino.insert(ROOT_INO, root);
        InodeTable {
            inner: Mutex::new(Inner {
                by_key,
                by_ino,
                next: ROOT_INO + 1,
            }),
        }
    }

    /// The number of `node`, assigned on first sight.
    pub fn ino(&self, node: &Node) -> u64 {
        let mut g = self.inner.lock();
        if let Some(&ino) = g.by_key.get(node) {
            return ino;
        }
        let ino = g.next;
        g.next += 1;
        g.by_key.insert(node.clone(), ino);
        g.by_ino.insert(ino, node.clone());
        ino
    }

    /// The node behind a number the kernel sent us.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.inner.lock().by_ino.get(&ino).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::snapshot::BackupNamespace;

    #[test]
    fn numbers_are_stable_and_distinct() {
        let t = InodeTable::new(Node::Namespace(BackupNamespace::root()));
        assert_eq!(t.ino(&Node::Namespace(BackupNamespace::root())), ROOT_INO);
        let a = t.ino(&Node::Scratch(1));
        let b = t.ino(&Node::Scratch(2));
        assert_ne!(a, b);
        assert_eq!(t.ino(&Node::Scratch(1)), a);
        assert_eq!(t.node(b), Some(Node::Scratch(2)));
        assert_eq!(t.node(999), None);
    }
}
