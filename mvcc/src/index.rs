//! The in-memory index from user key to its [`KeyIndex`], ordered by key so
//! ranges are walks (etcd `index.go`). Rebuilt from RocksDB on open.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;
use keelson_proto::mvccpb::KeyValue;

use crate::key_index::{KeyAt, KeyIndex};
use crate::revision::Revision;

/// A key range with etcd's `range_end` rules: an empty end is the single key
/// `key`; an end of `"\0"` is every key `>= key`; otherwise `[key, end)`.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange<'a> {
    pub key: &'a [u8],
    pub end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], end: &'a [u8]) -> Self {
        KeyRange { key, end }
    }

    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    /// Whether `k` falls inside the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key
        } else if self.end == [0] {
            k >= self.key
        } else {
            k >= self.key && k < self.end
        }
    }

    fn bounds(&self) -> Option<KeyBounds<'a>> {
        if self.end.is_empty() {
            Some((Bound::Included(self.key), Bound::Included(self.key)))
        } else if self.end == [0] {
            Some((Bound::Included(self.key), Bound::Unbounded))
        } else if self.end <= self.key {
            None
        } else {
            Some((Bound::Included(self.key), Bound::Excluded(self.end)))
        }
    }
}

type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

#[derive(Debug, Default)]
pub(crate) struct TreeIndex {
    keys: BTreeMap<Bytes, KeyIndex>,
}

impl TreeIndex {
    pub fn put(&mut self, key: &Bytes, rev: Revision) {
        match self.keys.get_mut(key.as_ref()) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::new();
                ki.put(rev);
                self.keys.insert(key.clone(), ki);
            }
        }
    }

    /// Adds one revision found on disk while rebuilding the index, oldest
    /// first. The first surviving put of a key restores its generation from
    /// the stored create revision and version; a tombstone of a key whose
    /// earlier revisions are gone is skipped (etcd `restoreIntoIndex`).
    pub fn restore_one(&mut self, kv: &KeyValue, rev: Revision, tombstone: bool) {
        match self.keys.get_mut(kv.key.as_ref()) {
            Some(ki) if tombstone => ki.tombstone(rev),
            Some(ki) => ki.put(rev),
            None if tombstone => {}
            None => {
                let mut ki = KeyIndex::new();
                ki.restore(Revision::new(kv.create_revision, 0), rev, kv.version);
                self.keys.insert(kv.key.clone(), ki);
            }
        }
    }

    pub fn tombstone(&mut self, key: &[u8], rev: Revision) {
        if let Some(ki) = self.keys.get_mut(key) {
            ki.tombstone(rev);
        }
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Visits the keys of `range` in order with their index; stops when `f`
    /// returns false.
    pub fn visit<'s>(&'s self, range: KeyRange<'_>, mut f: impl FnMut(&'s Bytes, &'s KeyIndex) -> bool) {
        let Some(bounds) = range.bounds() else { return };
        for (k, ki) in self.keys.range::<[u8], _>(bounds) {
            if !f(k, ki) {
                break;
            }
        }
    }

    /// The keys alive at `at` in `range`, in key order, up to `limit` of them
    /// (`usize::MAX` for all, 0 to only count), and how many there are in all.
    pub fn revisions(&self, range: KeyRange<'_>, at: i64, limit: usize) -> (Vec<(Bytes, KeyAt)>, usize) {
        let mut out = Vec::new();
        let mut total = 0;
        self.visit(range, |k, ki| {
            if let Some(state) = ki.get(at) {
                if out.len() < limit {
                    out.push((k.clone(), state));
                }
                total += 1;
            }
            true
        });
        (out, total)
    }

    /// Compacts every key at `at`; returns the revisions at or before `at`
    /// that stay. Keys left with no revision are removed.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut available);
            !ki.is_empty()
        });
        available
    }

    /// The revisions at or before `at` that a compaction at `at` would keep.
    pub fn keep(&self, at: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        for ki in self.keys.values() {
            ki.keep(at, &mut available);
        }
        available
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_rules() {
        let mut idx = TreeIndex::default();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            idx.put(&Bytes::from(*k), Revision::new(i as i64 + 1, 0));
        }
        let keys = |key: &str, end: &[u8]| {
            idx.revisions(KeyRange::new(key.as_bytes(), end), 10, usize::MAX)
                .0
                .into_iter()
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("b", b""), vec!["b"]);
        assert_eq!(keys("b", b"d"), vec!["b", "c"]);
        assert_eq!(keys("b", b"\0"), vec!["b", "c", "d"]);
        assert_eq!(keys("\0", b"\0"), vec!["a", "b", "c", "d"]);
        assert_eq!(keys("c", b"b"), Vec::<String>::new());
        let (first, total) = idx.revisions(KeyRange::new(b"a", b"\0"), 10, 2);
        assert_eq!((first.len(), total), (2, 4));
        // At revision 2 only a and b exist.
        assert_eq!(idx.revisions(KeyRange::new(b"a", b"\0"), 2, 0).1, 2);
    }
}
