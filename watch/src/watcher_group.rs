//! Every watcher of the hub, in a slab, indexed by what it watches.
//!
//! etcd keeps two `watcherGroup`s (synced and unsynced), each a map of
//! single-key watchers plus an interval tree of range watchers. Here there is
//! one index over all watchers and the group is the watcher's
//! [`WatcherState`](crate::watcher::WatcherState): the live path skips the
//! ones that are not synced. Single keys live in a hash map whose key
//! allocation is shared with the watchers; ranges are grouped by distinct
//! `[start, end)` in a sorted list with a running maximum of ends, so a point
//! lookup walks only the ranges that can contain the key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::watcher::Watcher;

/// Watcher indices sharing one key or one range. Most keys have one watcher,
/// which costs no allocation.
#[derive(Debug)]
// The box keeps a slot at 16 bytes instead of 32: it sits in every key's
// map entry, and a second watcher on the same key is the rare case.
#[allow(clippy::box_collection)]
enum Slot {
    One(u32),
    Many(Box<Vec<u32>>),
}

impl Slot {
    fn push(&mut self, idx: u32) {
        match self {
            Slot::One(first) => *self = Slot::Many(Box::new(vec![*first, idx])),
            Slot::Many(v) => v.push(idx),
        }
    }

    /// Removes `idx`; returns whether the slot is now empty.
    fn remove(&mut self, idx: u32) -> bool {
        match self {
            Slot::One(only) => *only == idx,
            Slot::Many(v) => {
                if let Some(pos) = v.iter().position(|&i| i == idx) {
                    v.swap_remove(pos);
                }
                if v.len() == 1 {
                    *self = Slot::One(v[0]);
                }
                false
            }
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Slot::One(idx) => std::slice::from_ref(idx),
            Slot::Many(v) => v,
        }
    }
}

/// One distinct range and its watchers.
#[derive(Debug)]
struct RangeEntry {
    start: Arc<[u8]>,
    /// Empty means unbounded.
    end: Arc<[u8]>,
    watchers: Slot,
}

/// `a > b` for range ends, where empty is +infinity.
fn end_after(end: &[u8], key: &[u8]) -> bool {
    end.is_empty() || end > key
}

/// Orders range ends, empty (+infinity) last.
fn cmp_end(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// Distinct ranges sorted by (start, end), with `max_end[i]` the greatest end
/// among `entries[..=i]`.
#[derive(Debug, Default)]
struct RangeIndex {
    entries: Vec<RangeEntry>,
    max_end: Vec<Arc<[u8]>>,
}

impl RangeIndex {
    fn position(&self, start: &[u8], end: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.start[..].cmp(start).then_with(|| cmp_end(&e.end, end)))
    }

    /// Adds a watcher; returns the shared (start, end) allocations.
    fn insert(&mut self, start: &[u8], end: &[u8], idx: u32) -> (Arc<[u8]>, Arc<[u8]>) {
        match self.position(start, end) {
            Ok(pos) => {
                let e = &mut self.entries[pos];
                e.watchers.push(idx);
                (e.start.clone(), e.end.clone())
            }
            Err(pos) => {
                let e = RangeEntry { start: start.into(), end: end.into(), watchers: Slot::One(idx) };
                let shared = (e.start.clone(), e.end.clone());
                self.entries.insert(pos, e);
                self.rebuild_max_end(pos);
                shared
            }
        }
    }

    fn remove(&mut self, start: &[u8], end: &[u8], idx: u32) {
        if let Ok(pos) = self.position(start, end)
            && self.entries[pos].watchers.remove(idx)
        {
            self.entries.remove(pos);
            self.rebuild_max_end(pos);
        }
    }

    fn rebuild_max_end(&mut self, from: usize) {
        self.max_end.truncate(from);
        for i in from..self.entries.len() {
            let end = &self.entries[i].end;
            let max = match self.max_end.last() {
                Some(prev) if cmp_end(prev, end).is_ge() => prev.clone(),
                _ => end.clone(),
            };
            self.max_end.push(max);
        }
    }

    fn for_each_containing(&self, key: &[u8], f: &mut impl FnMut(u32)) {
        let below = self.entries.partition_point(|e| &e.start[..] <= key);
        for i in (0..below).rev() {
            if !end_after(&self.max_end[i], key) {
                break;
            }
            let e = &self.entries[i];
            if end_after(&e.end, key) {
                e.watchers.as_slice().iter().copied().for_each(&mut *f);
            }
        }
    }
}

/// All watchers and the index by key.
#[derive(Debug, Default)]
pub(crate) struct WatcherGroup {
    slab: Vec<Option<Watcher>>,
    free: Vec<u32>,
    keys: HashMap<Arc<[u8]>, Slot>,
    ranges: RangeIndex,
    len: usize,
}

/// What a new watcher watches, before it shares the index's allocations.
pub(crate) struct NewWatcher<'a> {
    pub key: &'a [u8],
    /// As in [`Watcher::end`].
    pub end: Option<&'a [u8]>,
    pub min_rev: i64,
    pub start_rev: i64,
    pub id: i64,
    pub stream: u32,
    pub flags: u8,
    pub state: crate::watcher::WatcherState,
}

impl WatcherGroup {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds a watcher and returns its index.
    pub fn insert(&mut self, new: NewWatcher<'_>) -> u32 {
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.slab.push(None);
                u32::try_from(self.slab.len() - 1).expect("fewer than 2^32 watchers")
            }
        };
        let (key, end) = match new.end {
            None => {
                let known = self.keys.get_key_value(new.key).map(|(key, _)| key.clone());
                let key = match known {
                    Some(key) => {
                        if let Some(slot) = self.keys.get_mut(new.key) {
                            slot.push(idx);
                        }
                        key
                    }
                    None => {
                        let key: Arc<[u8]> = new.key.into();
                        self.keys.insert(key.clone(), Slot::One(idx));
                        key
                    }
                };
                (key, None)
            }
            Some(end) => {
                let (key, end) = self.ranges.insert(new.key, end, idx);
                (key, Some(end))
            }
        };
        self.slab[idx as usize] = Some(Watcher {
            key,
            end,
            min_rev: new.min_rev,
            start_rev: new.start_rev,
            id: new.id,
            stream: new.stream,
            flags: new.flags,
            state: new.state,
        });
        self.len += 1;
        idx
    }

    /// Removes and returns the watcher at `idx`.
    pub fn remove(&mut self, idx: u32) -> Option<Watcher> {
        let w = self.slab.get_mut(idx as usize)?.take()?;
        match &w.end {
            None => {
                if let Some(slot) = self.keys.get_mut(&w.key[..])
                    && slot.remove(idx)
                {
                    self.keys.remove(&w.key[..]);
                }
            }
            Some(end) => self.ranges.remove(&w.key, end, idx),
        }
        self.free.push(idx);
        self.len -= 1;
        if self.len == 0 {
            // Give the memory of a burst back once everything is gone.
            self.slab = Vec::new();
            self.free = Vec::new();
            self.keys.shrink_to_fit();
        }
        Some(w)
    }

    pub fn get(&self, idx: u32) -> Option<&Watcher> {
        self.slab.get(idx as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Watcher> {
        self.slab.get_mut(idx as usize)?.as_mut()
    }

    /// Calls `f` with every watcher (in any state) whose key or range holds `key`.
    pub fn for_each_watching(&self, key: &[u8], mut f: impl FnMut(u32)) {
        if let Some(slot) = self.keys.get(key) {
            slot.as_slice().iter().copied().for_each(&mut f);
        }
        self.ranges.for_each_containing(key, &mut f);
    }

    /// Every live watcher index, in slab order.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slab.iter().enumerate().filter(|(_, w)| w.is_some()).map(|(i, _)| i as u32)
    }

    /// Whether any watcher watches `key` (test helper and debug check).
    #[cfg(test)]
    pub fn watching(&self, key: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        self.for_each_watching(key, |i| out.push(i));
        out.sort_unstable();
        out.dedup();
        debug_assert!(out.iter().all(|&i| self.get(i).is_some_and(|w| w.matches(key))));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watcher::WatcherState;

    fn add(g: &mut WatcherGroup, key: &[u8], end: Option<&[u8]>) -> u32 {
        g.insert(NewWatcher {
            key,
            end,
            min_rev: 1,
            start_rev: 0,
            id: 0,
            stream: 0,
            flags: 0,
            state: WatcherState::Synced,
        })
    }

    #[test]
    fn lookup_finds_keys_and_ranges() {
        let mut g = WatcherGroup::default();
        let a = add(&mut g, b"a", None);
        let a2 = add(&mut g, b"a", None);
        let ac = add(&mut g, b"a", Some(b"c"));
        let bz = add(&mut g, b"b", Some(b"z"));
        let all = add(&mut g, b"\0", Some(b""));
        let from_y = add(&mut g, b"y", Some(b""));
        assert_eq!(g.watching(b"a"), vec![a, a2, ac, all]);
        assert_eq!(g.watching(b"b"), vec![ac, bz, all]);
        assert_eq!(g.watching(b"c"), vec![bz, all]);
        assert_eq!(g.watching(b"y"), vec![bz, all, from_y]);
        assert_eq!(g.watching(b"z"), vec![all, from_y]);
        g.remove(all);
        g.remove(a);
        assert_eq!(g.watching(b"a"), vec![a2, ac]);
        assert_eq!(g.watching(b"c"), vec![bz]);
        g.remove(bz);
        assert_eq!(g.watching(b"c"), Vec::<u32>::new());
        assert_eq!(g.watching(b"z"), vec![from_y]);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn lookup_matches_brute_force() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        let mut g = WatcherGroup::default();
        let mut live: Vec<u32> = Vec::new();
        let key = |rng: &mut StdRng| vec![b'a' + rng.random_range(0..6u8)];
        for _ in 0..2000 {
            if rng.random_bool(0.6) || live.is_empty() {
                let k = key(&mut rng);
                let idx = match rng.random_range(0..3) {
                    0 => add(&mut g, &k, None),
                    1 => add(&mut g, &k, Some(b"")),
                    _ => {
                        let e = vec![k[0] + rng.random_range(1..4u8)];
                        add(&mut g, &k, Some(&e))
                    }
                };
                live.push(idx);
            } else {
                let i = rng.random_range(0..live.len());
                g.remove(live.swap_remove(i));
            }
            let probe = key(&mut rng);
            let mut want: Vec<u32> =
                live.iter().copied().filter(|&i| g.get(i).is_some_and(|w| w.matches(&probe))).collect();
            want.sort_unstable();
            assert_eq!(g.watching(&probe), want);
        }
    }
}
