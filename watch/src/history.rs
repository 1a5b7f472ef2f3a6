//! The in-memory ring of recent revisions.
//!
//! Watchers that start a little in the past, and parked watchers resuming,
//! catch up from here under the hub lock without touching the store. The ring
//! also memoizes `prev_kv` per event, so one point read serves every watcher
//! that wants it.

use std::collections::VecDeque;

use keelson_proto::mvccpb::{Event, KeyValue};

/// `prev_kv` of one event: `None` until looked up, then the answer.
pub(crate) type PrevSlot = Option<Option<KeyValue>>;

/// The events of one main revision, in sub-revision order.
#[derive(Debug)]
pub(crate) struct RevEvents {
    pub rev: i64,
    pub events: Vec<Event>,
    /// Aligned with `events`.
    pub prev: Vec<PrevSlot>,
    bytes: usize,
}

/// The last revisions applied, bounded by count and approximate bytes.
#[derive(Debug)]
pub(crate) struct History {
    revs: VecDeque<RevEvents>,
    /// Every event with revision `>= complete_from` is in the ring.
    complete_from: i64,
    bytes: usize,
    max_revs: usize,
    max_bytes: usize,
}

fn approx_bytes(ev: &Event) -> usize {
    let kv = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len() + 48);
    64 + kv(&ev.kv) + kv(&ev.prev_kv)
}

impl History {
    /// An empty ring for a store whose current revision is `current_rev`.
    pub fn new(current_rev: i64, max_revs: usize, max_bytes: usize) -> Self {
        History {
            revs: VecDeque::new(),
            complete_from: current_rev + 1,
            bytes: 0,
            max_revs: max_revs.max(1),
            max_bytes,
        }
    }

    /// Whether the ring holds every event from `rev` on.
    pub fn covers(&self, rev: i64) -> bool {
        rev >= self.complete_from
    }

    /// The first revision the ring is complete from.
    pub fn complete_from(&self) -> i64 {
        self.complete_from
    }

    /// Appends a revision (newer than every one held) and evicts the oldest
    /// beyond the bounds.
    pub fn push(&mut self, rev: i64, events: Vec<Event>, prev: Vec<PrevSlot>) {
        let bytes = events.iter().map(approx_bytes).sum();
        self.bytes += bytes;
        self.revs.push_back(RevEvents { rev, events, prev, bytes });
        while self.revs.len() > self.max_revs || (self.bytes > self.max_bytes && self.revs.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.revs.pop_front() {
            self.bytes -= old.bytes;
            self.complete_from = old.rev + 1;
        }
    }

    /// Forgets revisions below `compact_rev`: watchers cannot start there any more.
    pub fn compact(&mut self, compact_rev: i64) {
        while self.revs.front().is_some_and(|r| r.rev < compact_rev) {
            self.pop_front();
        }
        self.complete_from = self.complete_from.max(compact_rev);
    }

    /// The events a `prev_kv` watcher at `from` would be served next (the
    /// same span `serve_from_history` takes: up to `max_revs` revisions that
    /// have events it matches) whose `prev_kv` is not looked up yet, as
    /// (revision, position in the revision, event).
    pub fn missing_prev(
        &self,
        from: i64,
        max_revs: usize,
        matches: impl Fn(&Event) -> bool,
    ) -> Vec<(i64, usize, Event)> {
        let mut missing = Vec::new();
        let mut revs = 0;
        for entry in self.revs.range(self.index_of(from)..) {
            let mut any = false;
            for (sub, (ev, prev)) in entry.events.iter().zip(&entry.prev).enumerate() {
                if matches(ev) {
                    any = true;
                    if prev.is_none() && !crate::watcher::is_create(ev) {
                        missing.push((entry.rev, sub, ev.clone()));
                    }
                }
            }
            if any {
                revs += 1;
                if revs >= max_revs {
                    break;
                }
            }
        }
        missing
    }

    /// Records a looked-up `prev_kv`, if the revision is still held.
    pub fn set_prev(&mut self, rev: i64, sub: usize, prev: Option<KeyValue>) {
        let i = self.index_of(rev);
        if let Some(entry) = self.revs.get_mut(i)
            && entry.rev == rev
            && let Some(slot) = entry.prev.get_mut(sub)
            && slot.is_none()
        {
            *slot = Some(prev);
        }
    }

    /// Index of the first held revision `>= rev`.
    pub fn index_of(&self, rev: i64) -> usize {
        self.revs.partition_point(|r| r.rev < rev)
    }

    #[cfg(test)]
    pub fn get(&self, index: usize) -> Option<&RevEvents> {
        self.revs.get(index)
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut RevEvents> {
        self.revs.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(rev: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from_static(b"k"),
                mod_revision: rev,
                create_revision: rev,
                version: 1,
                value: Bytes::from_static(b"v"),
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn ring_evicts_and_tracks_completeness() {
        let mut h = History::new(10, 3, usize::MAX);
        assert!(h.covers(11));
        assert!(!h.covers(10));
        for rev in 11..=15 {
            h.push(rev, vec![ev(rev)], vec![None]);
        }
        assert_eq!(h.complete_from(), 13);
        assert_eq!(h.get(h.index_of(14)).map(|r| r.rev), Some(14));
        h.compact(14);
        assert_eq!(h.complete_from(), 14);
        assert_eq!(h.get(0).map(|r| r.rev), Some(14));
    }
}
