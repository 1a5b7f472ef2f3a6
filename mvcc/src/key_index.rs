//! The revisions of one key, as etcd's `key_index.go` keeps them.
//!
//! A key's life is a list of generations. A generation starts with the put
//! that creates the key and ends with the tombstone that deletes it; the last
//! generation is open (empty after a delete). `version` counts the puts of the
//! current generation.

use std::collections::HashSet;

use crate::revision::Revision;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Number of puts in this generation (the key's `version` after the last).
    pub ver: i64,
    /// The revision that created this generation.
    pub created: Revision,
    /// Every revision of the generation; the last one of a closed generation
    /// is its tombstone.
    pub revs: Vec<Revision>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Index of the last revision whose main is `<= at`, if any.
    fn last_at_or_before(&self, at: i64) -> Option<usize> {
        self.revs.iter().rposition(|r| r.main <= at)
    }
}

/// What a key looked like at some revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyAt {
    pub modified: Revision,
    pub created: Revision,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    pub modified: Revision,
    pub generations: Vec<Generation>,
}

impl KeyIndex {
    pub fn new() -> Self {
        KeyIndex { modified: Revision::default(), generations: vec![Generation::default()] }
    }

    /// Starts the index of a key from its oldest surviving revision, as
    /// found on disk after a compaction removed the ones before it.
    pub fn restore(&mut self, created: Revision, modified: Revision, version: i64) {
        self.generations = vec![Generation { ver: version, created, revs: vec![modified] }];
        self.modified = modified;
    }

    /// Records a put at `rev`.
    pub fn put(&mut self, rev: Revision) {
        let g = self.generations.last_mut().expect("a key index has a generation");
        if g.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
    }

    /// Records a tombstone at `rev`: the current generation ends.
    pub fn tombstone(&mut self, rev: Revision) {
        self.put(rev);
        self.generations.push(Generation::default());
    }

    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// The generation holding the key's state at revision `at`, if the key was
    /// alive then.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            if g.is_empty() {
                continue;
            }
            if i != last {
                // A closed generation whose tombstone is at or before `at`:
                // the key was deleted then.
                if g.revs.last().is_some_and(|t| t.main <= at) {
                    return None;
                }
            }
            if g.revs[0].main <= at {
                return Some(g);
            }
        }
        None
    }

    /// The key's state at revision `at`, or `None` if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        let n = g.last_at_or_before(at)?;
        Some(KeyAt {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    /// Finds, for compaction at `at`, the generation to start from and the
    /// index of the revision to keep in it (etcd `doCompact`). Adds that
    /// revision to `available`.
    fn do_compact(&self, at: i64, available: &mut HashSet<Revision>) -> (usize, Option<usize>) {
        let mut gen_idx = 0;
        while gen_idx < self.generations.len() - 1 {
            let g = &self.generations[gen_idx];
            if g.revs.last().is_some_and(|t| t.main > at) {
                break;
            }
            gen_idx += 1;
        }
        let g = &self.generations[gen_idx];
        let rev_idx = g.last_at_or_before(at);
        if let Some(i) = rev_idx {
            available.insert(g.revs[i]);
        }
        (gen_idx, rev_idx)
    }

    /// Drops every revision older than the newest one at or before `at`
    /// (and that one too if it is a tombstone). `available` receives the
    /// revisions at or before `at` that stay.
    pub fn compact(&mut self, at: i64, available: &mut HashSet<Revision>) {
        if self.is_empty() {
            return;
        }
        let (mut gen_idx, rev_idx) = self.do_compact(at, available);
        let last = self.generations.len() - 1;
        let g = &mut self.generations[gen_idx];
        if !g.is_empty() {
            if let Some(i) = rev_idx {
                g.revs.drain(..i);
            }
            if g.revs.len() == 1 && gen_idx != last {
                available.remove(&g.revs[0]);
                gen_idx += 1;
            }
        }
        self.generations.drain(..gen_idx);
    }

    /// Like [`KeyIndex::compact`] but only reports what would stay, leaving
    /// the index as it is (etcd `keep`).
    pub fn keep(&self, at: i64, available: &mut HashSet<Revision>) {
        if self.is_empty() {
            return;
        }
        let (gen_idx, rev_idx) = self.do_compact(at, available);
        let g = &self.generations[gen_idx];
        if !g.is_empty() && rev_idx == Some(g.revs.len() - 1) && gen_idx != self.generations.len() - 1 {
            available.remove(&g.revs[g.revs.len() - 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// The history used by etcd's key index tests: puts at 2, 4, a tombstone
    /// at 6, puts at 8, 10, a tombstone at 12, puts at 14, 16.
    fn history() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.put(r(4));
        ki.tombstone(r(6));
        ki.put(r(8));
        ki.put(r(10));
        ki.tombstone(r(12));
        ki.put(r(14));
        ki.put(r(16));
        ki
    }

    #[test]
    fn get_follows_generations() {
        let ki = history();
        assert_eq!(ki.get(1), None);
        assert_eq!(ki.get(2), Some(KeyAt { modified: r(2), created: r(2), version: 1 }));
        assert_eq!(ki.get(5), Some(KeyAt { modified: r(4), created: r(2), version: 2 }));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.get(7), None);
        assert_eq!(ki.get(9), Some(KeyAt { modified: r(8), created: r(8), version: 1 }));
        assert_eq!(ki.get(12), None);
        assert_eq!(ki.get(13), None);
        assert_eq!(ki.get(100), Some(KeyAt { modified: r(16), created: r(14), version: 2 }));
    }

    #[test]
    fn compact_keeps_the_newest_revision_at_or_before() {
        let mut ki = history();
        let mut avail = HashSet::new();
        ki.compact(5, &mut avail);
        assert_eq!(avail, HashSet::from([r(4)]));
        assert_eq!(ki.generations[0].revs, vec![r(4), r(6)]);
        assert_eq!(ki.get(5).map(|k| k.version), Some(2));

        // Compacting at the tombstone drops the whole first generation.
        let mut avail = HashSet::new();
        ki.compact(6, &mut avail);
        assert!(avail.is_empty());
        assert_eq!(ki.generations[0].revs, vec![r(8), r(10), r(12)]);

        let mut avail = HashSet::new();
        ki.compact(15, &mut avail);
        assert_eq!(avail, HashSet::from([r(14)]));
        assert_eq!(ki.generations.len(), 1);
        assert_eq!(ki.generations[0].revs, vec![r(14), r(16)]);
    }

    #[test]
    fn keep_matches_compact_without_changing_the_index() {
        for at in 0..20 {
            let mut compacted = history();
            let kept = history();
            let mut a = HashSet::new();
            let mut b = HashSet::new();
            compacted.compact(at, &mut a);
            kept.keep(at, &mut b);
            assert_eq!(a, b, "at {at}");
            assert_eq!(kept, history());
        }
    }

    #[test]
    fn fully_deleted_key_compacts_to_empty() {
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        ki.tombstone(r(2));
        let mut avail = HashSet::new();
        ki.compact(3, &mut avail);
        assert!(ki.is_empty());
        assert!(avail.is_empty());
    }
}
