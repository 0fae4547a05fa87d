//! The inode table: the only inode state of the mount. A node key (a path-like identity,
//! see `node.rs`) has a number derived from a hash of the key, so the same path gets the
//! same number for the life of the mount even after the kernel forgot it, and a key that
//! includes content identity (an archive's checksum, a snapshot folder's inode) never
//! aliases older cached pages. The table holds only the nodes the kernel still
//! references (FUSE lookup counts), so memory follows the kernel's inode cache, not the
//! number of paths ever visited.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;

use super::node::Node;

/// The FUSE root inode.
pub const ROOT_INO: u64 = 1;

#[derive(Debug)]
pub struct InodeTable {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Slot {
    node: Node,
    /// Kernel references: +1 per lookup/create reply, -n per forget. The root is pinned.
    lookups: u64,
}

#[derive(Debug)]
struct Inner {
    by_key: HashMap<Node, u64>,
    by_ino: HashMap<u64, Slot>,
}

/// The number a key hashes to: in `2..2^63`, away from the root and from numbers some
/// tools read as negative. `DefaultHasher::new()` has fixed keys: stable for the process.
fn hashed(node: &Node) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    node.hash(&mut h);
    2 + h.finish() % ((1u64 << 63) - 2)
}

impl Inner {
    /// The number of `node`: its live number, or its hash, probing past live numbers
    /// held by other keys (a 64-bit collision; then only that key's number may differ
    /// between two separate lifetimes).
    fn number(&self, node: &Node) -> u64 {
        if let Some(&ino) = self.by_key.get(node) {
            return ino;
        }
        let mut ino = hashed(node);
        while self.by_ino.contains_key(&ino) {
            ino = if ino + 1 >= 1 << 63 { 2 } else { ino + 1 };
        }
        ino
    }
}

impl InodeTable {
    /// A table whose root (`ROOT_INO`) is `root`.
    pub fn new(root: Node) -> InodeTable {
        let mut by_key = HashMap::new();
        let mut by_ino = HashMap::new();
        by_key.insert(root.clone(), ROOT_INO);
        by_ino.insert(
            ROOT_INO,
            Slot {
                node: root,
                lookups: 1,
            },
        );
        InodeTable {
            inner: Mutex::new(Inner { by_key, by_ino }),
        }
    }

    /// The number of `node`, without taking a kernel reference (getattr, readdir).
    pub fn ino(&self, node: &Node) -> u64 {
        self.inner.lock().number(node)
    }

    /// The number of `node` if the kernel references it (what is worth invalidating).
    pub fn live(&self, node: &Node) -> Option<u64> {
        self.inner.lock().by_key.get(node).copied()
    }

    /// The number of `node`, taking one kernel reference: for the replies that make the
    /// kernel count a lookup (lookup, create).
    pub fn remember(&self, node: &Node) -> u64 {
        let mut g = self.inner.lock();
        let ino = g.number(node);
        match g.by_ino.get_mut(&ino) {
            Some(slot) => slot.lookups += 1,
            None => {
                g.by_key.insert(node.clone(), ino);
                g.by_ino.insert(
                    ino,
                    Slot {
                        node: node.clone(),
                        lookups: 1,
                    },
                );
            }
        }
        ino
    }

    /// The kernel dropped `n` references to `ino`; the entry goes with the last one.
    /// Returns the number of nodes still referenced when this one went, else `None`.
    pub fn forget(&self, ino: u64, n: u64) -> Option<usize> {
        if ino == ROOT_INO {
            return None;
        }
        let mut g = self.inner.lock();
        let gone = match g.by_ino.get_mut(&ino) {
            Some(slot) => {
                slot.lookups = slot.lookups.saturating_sub(n);
                slot.lookups == 0
            }
            None => false,
        };
        if !gone {
            return None;
        }
        let slot = g.by_ino.remove(&ino)?;
        g.by_key.remove(&slot.node);
        Some(g.by_ino.len())
    }

    /// The node behind a number the kernel sent us.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.inner.lock().by_ino.get(&ino).map(|s| s.node.clone())
    }

    /// Nodes the kernel currently references (the root included).
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
    use crate::store::format::names::BackupNamespace;

    fn table() -> InodeTable {
        InodeTable::new(Node::Namespace(BackupNamespace::root()))
    }

    #[test]
    fn numbers_are_stable_distinct_and_survive_forget() {
        let t = table();
        assert_eq!(t.ino(&Node::Namespace(BackupNamespace::root())), ROOT_INO);
        let a = t.remember(&Node::Scratch(1));
        let b = t.remember(&Node::Scratch(2));
        assert_ne!(a, b);
        assert!(a > ROOT_INO && b > ROOT_INO && a < 1 << 63);
        assert_eq!(t.ino(&Node::Scratch(1)), a);
        assert_eq!(t.node(b), Some(Node::Scratch(2)));
        assert_eq!(t.node(999), None);
        // Gone with the last reference, the same number when looked up again.
        t.remember(&Node::Scratch(1));
        t.forget(a, 1);
        assert_eq!(t.node(a), Some(Node::Scratch(1)));
        t.forget(a, 1);
        assert_eq!(t.node(a), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.remember(&Node::Scratch(1)), a);
        // The root is never forgotten.
        t.forget(ROOT_INO, 100);
        assert!(t.node(ROOT_INO).is_some());
    }

    #[test]
    fn memory_follows_the_kernel_not_the_paths_ever_seen() {
        let t = table();
        for i in 0..10_000 {
            let ino = t.remember(&Node::Scratch(i));
            t.forget(ino, 1);
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_hash_collision_with_a_live_node_gets_another_number() {
        let t = table();
        let a = t.remember(&Node::Scratch(7));
        // Pretend another key already holds a's hash: force it by hand.
        {
            let mut g = t.inner.lock();
            let slot = g.by_ino.remove(&a).unwrap();
            g.by_key.remove(&slot.node);
            g.by_key.insert(Node::Scratch(8), a);
            g.by_ino.insert(
                a,
                Slot {
                    node: Node::Scratch(8),
                    lookups: 1,
                },
            );
        }
        let again = t.remember(&Node::Scratch(7));
        assert_ne!(again, a);
        assert_eq!(t.node(a), Some(Node::Scratch(8)));
        assert_eq!(t.node(again), Some(Node::Scratch(7)));
    }
}
