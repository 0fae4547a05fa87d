//! Goodbye tables (spec §7.1): finding and checking a directory's table from its end,
//! looking a name up by binary search over the Eytzinger-ordered hashes (both subtrees on
//! equal hashes), and listing a directory by its table, checked against its children's
//! real layout (contiguous, sorted, hashes and sizes matching).

use std::cmp::Ordering;

use crate::pxar::format::*;
use crate::util::error::Result;
use crate::util::ReadAt;

use super::entry::{Dir, Entry, EntryKind};
use super::stream::Cursor;
use super::Archive;

/// Goodbye items read at once when a whole table is needed (48 KiB).
const BATCH: u64 = 2048;

impl<R: ReadAt> Archive<R> {
    /// The goodbye table of the directory whose ENTRY is at `entry`, whose children start
    /// at `children` and which ends at `end`: its tail is the last item before `end`.
    /// `goodbye_first`: the item at `children` is the GOODBYE (an empty directory).
    pub(super) fn dir_table(
        &self,
        entry: u64,
        children: u64,
        end: u64,
        root: bool,
        goodbye_first: bool,
    ) -> Result<Dir> {
        let min = HEADER_SIZE + GOODBYE_ITEM_SIZE;
        if end < children.saturating_add(min) {
            return Err(self.bad(children, "a directory without room for its goodbye table"));
        }
        let at = end - GOODBYE_ITEM_SIZE;
        let mut b = [0u8; GOODBYE_ITEM_SIZE as usize];
        self.read_exact(at, &mut b)?;
        let tail = GoodbyeItem::parse(&b);
        if tail.hash != GOODBYE_TAIL_MARKER {
            return Err(self.bad(at, "no goodbye tail at the end of the directory"));
        }
        let fits = (tail.size.saturating_sub(HEADER_SIZE)).is_multiple_of(GOODBYE_ITEM_SIZE);
        let goodbye = end
            .checked_sub(tail.size)
            .filter(|g| *g >= children && tail.size >= min && fits);
        let Some(goodbye) = goodbye else {
            return Err(self.bad(
                at,
                format!(
                    "a goodbye table of {} bytes does not fit its directory",
                    tail.size
                ),
            ));
        };
        if goodbye_first != (goodbye == children) {
            return Err(self.bad(children, "the goodbye table is not where the children end"));
        }
        let mut h = [0u8; 16];
        self.read_exact(goodbye, &mut h)?;
        let h = Header::parse(&h);
        if h.htype != GOODBYE || h.full_size != tail.size {
            return Err(self.bad(goodbye, "no GOODBYE header of the tail's size"));
        }
        // The root's tail reaches back to the stream start (pxar 1.0.0); accept its
        // ENTRY too. Every other directory's reaches back to its ENTRY.
        if tail.offset != goodbye - entry && !(root && tail.offset == goodbye) {
            return Err(self.bad(
                at,
                format!(
                    "the goodbye tail's offset {} does not reach back to the ENTRY at {entry}",
                    tail.offset
                ),
            ));
        }
        Ok(Dir {
            entry,
            children,
            goodbye,
            end,
            count: (tail.size - HEADER_SIZE) / GOODBYE_ITEM_SIZE - 1,
        })
    }

    fn item_offset(d: &Dir, i: u64) -> u64 {
        d.goodbye + HEADER_SIZE + i * GOODBYE_ITEM_SIZE
    }

    fn item(&self, d: &Dir, i: u64) -> Result<GoodbyeItem> {
        let mut b = [0u8; GOODBYE_ITEM_SIZE as usize];
        self.read_exact(Self::item_offset(d, i), &mut b)?;
        Ok(GoodbyeItem::parse(&b))
    }

    /// The FILENAME offset item `i` points to, which must lie among the children.
    fn child_pos(&self, d: &Dir, i: u64, it: &GoodbyeItem) -> Result<u64> {
        d.goodbye
            .checked_sub(it.offset)
            .filter(|p| *p >= d.children && *p < d.goodbye)
            .ok_or_else(|| {
                self.bad(
                    Self::item_offset(d, i),
                    format!(
                        "goodbye item {i} points {} bytes back, outside its directory's children ({}..{})",
                        it.offset, d.children, d.goodbye
                    ),
                )
            })
    }

    /// The child item `i` names, its size checked: a directory spans exactly `size`; any
    /// other entry's metadata is `size`, or for a payload reference `size` may also count
    /// the referenced payload (pxar 1.0.0 writes both, spec §7.1).
    fn child(&self, cur: &mut Cursor<'_, R>, d: &Dir, i: u64, it: &GoodbyeItem) -> Result<Entry> {
        let pos = self.child_pos(d, i, it)?;
        let e = self.decode_child_in(cur, pos, d.goodbye, Some(it.size))?;
        let meta = e.end - pos;
        let ok = match &e.kind {
            EntryKind::Directory(_) => true,
            EntryKind::File { size, payload } if payload.is_ref() => {
                it.size == meta || Some(it.size) == meta.checked_add(*size)
            }
            _ => it.size == meta,
        };
        if !ok {
            return Err(self.bad(
                Self::item_offset(d, i),
                format!(
                    "goodbye item {i} gives size {}, the entry at {pos} has {meta}",
                    it.size
                ),
            ));
        }
        Ok(e)
    }

    /// `name` in directory `d` by its hash: O(log n) items read; on equal hashes the
    /// names are compared and both subtrees searched. Every position is visited at most
    /// once, so a table of any content ends the search.
    pub(super) fn find(&self, d: &Dir, name: &[u8]) -> Result<Option<Entry>> {
        let h = (self.hasher)(name);
        let mut stack = vec![0u64];
        while let Some(i) = stack.pop() {
            if i >= d.count {
                continue;
            }
            let it = self.item(d, i)?;
            match h.cmp(&it.hash) {
                Ordering::Less => stack.push(2 * i + 1),
                Ordering::Greater => stack.push(2 * i + 2),
                Ordering::Equal => {
                    let e = self.child(&mut Cursor::new(self, d.goodbye), d, i, &it)?;
                    if e.name == name {
                        return Ok(Some(e));
                    }
                    stack.push(2 * i + 2);
                    stack.push(2 * i + 1);
                }
            }
        }
        Ok(None)
    }

    /// Every child of `d` in stream (= name) order, the table checked whole: a search
    /// tree ordered by hash, each hash its child's name's, the children contiguous from
    /// the end of the directory's attributes to the table, names strictly increasing.
    pub(super) fn children(&self, d: &Dir) -> Result<Vec<Entry>> {
        // Read in bounded batches; the vector grows only with items actually read.
        let mut items: Vec<GoodbyeItem> = Vec::new();
        let mut buf = Vec::new();
        let mut i = 0u64;
        while i < d.count {
            let n = (d.count - i).min(BATCH);
            buf.resize((n * GOODBYE_ITEM_SIZE) as usize, 0);
            self.read_exact(Self::item_offset(d, i), &mut buf)?;
            items.extend(
                buf.chunks_exact(GOODBYE_ITEM_SIZE as usize)
                    .map(GoodbyeItem::parse),
            );
            i += n;
        }
        if let Some(bad) = first_out_of_order(&items) {
            return Err(self.bad(
                Self::item_offset(d, bad as u64),
                format!("goodbye item {bad} breaks the table's order by hash"),
            ));
        }
        let mut order = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            order.push((self.child_pos(d, i as u64, it)?, i));
        }
        order.sort_unstable();
        // Grows only with children decoded (each real, contiguous bytes of the stream).
        let mut out: Vec<Entry> = Vec::new();
        let mut cur = Cursor::new(self, d.goodbye);
        let mut next = d.children;
        for (pos, i) in order {
            if pos != next {
                return Err(self.bad(
                    pos,
                    format!(
                        "a child where {} (the previous child ends at {next})",
                        if pos < next {
                            "children overlap"
                        } else {
                            "bytes lie outside any child"
                        }
                    ),
                ));
            }
            let it = &items[i];
            let e = self.child(&mut cur, d, i as u64, it)?;
            if (self.hasher)(&e.name) != it.hash {
                return Err(self.bad(
                    Self::item_offset(d, i as u64),
                    format!("goodbye item {i}'s hash is not its name's"),
                ));
            }
            if out.last().is_some_and(|prev| prev.name >= e.name) {
                return Err(self.bad(pos, "names not strictly sorted in their directory"));
            }
            next = e.end;
            out.push(e);
        }
        if next != d.goodbye {
            return Err(self.bad(next, "bytes between the last child and the goodbye table"));
        }
        Ok(out)
    }
}

/// The first array position (in in-order) whose hash is smaller than its in-order
/// predecessor's: the table is not a search tree. Iterative, no depth bound by input.
fn first_out_of_order(items: &[GoodbyeItem]) -> Option<usize> {
    let n = items.len();
    let mut stack = Vec::new();
    let mut i = 0usize;
    let mut prev: Option<u64> = None;
    loop {
        while i < n {
            stack.push(i);
            i = 2 * i + 1;
        }
        let top = stack.pop()?;
        if prev.is_some_and(|p| p > items[top].hash) {
            return Some(top);
        }
        prev = Some(items[top].hash);
        i = 2 * top + 2;
    }
}
