//! Watch histories and the validators of etcd's watch guarantees.
//!
//! Each validator looks at one recorded watch stream ([`WatchRecord`]) and
//! returns the [`WatchViolation`]s it found (empty: the guarantee held).
//! Those that need to know what *should* have been delivered take a
//! reference [`EventLog`]: every event of the keyspace in revision order,
//! built either from the linearization the KV checker found
//! ([`super::linearizability::reference_events`]) or by merging the watch
//! streams themselves ([`EventLog::from_watches`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::history::{Bytes, ClientId, KeyValue, in_range};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// mvccpb.Event. For a delete, `kv` holds the key and `mod_revision` only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    #[serde(default)]
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
    fn id(&self) -> (Bytes, i64) {
        (self.kv.key.clone(), self.kv.mod_revision)
    }
}

/// WatchCreateRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub key: Bytes,
    #[serde(default)]
    pub range_end: Bytes,
    /// 0: from the revision after the one in the created response.
    #[serde(default)]
    pub start_revision: i64,
    #[serde(default)]
    pub prev_kv: bool,
    #[serde(default)]
    pub progress_notify: bool,
}

/// One WatchResponse as received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// Monotonic nanoseconds when it arrived.
    pub time: u64,
    /// The header revision.
    pub revision: i64,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default)]
    pub compact_revision: i64,
    /// More fragments of the same response follow.
    #[serde(default)]
    pub fragment: bool,
}

impl WatchResponse {
    /// etcd's `IsProgressNotify`: no events and nothing else to say but the
    /// revision.
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
            && !self.created
            && !self.canceled
            && self.compact_revision == 0
            && self.revision != 0
            && !self.fragment
    }
}

/// One watch stream of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    pub client: ClientId,
    pub watch_id: i64,
    pub request: WatchRequest,
    pub responses: Vec<WatchResponse>,
}

impl WatchRecord {
    fn id(&self) -> WatchId {
        WatchId { client: self.client, watch_id: self.watch_id }
    }

    fn matches(&self, key: &[u8]) -> bool {
        in_range(key, self.request.key.as_slice(), self.request.range_end.as_slice())
    }

    /// The first revision this watch must deliver: its start revision, or
    /// the created response's revision + 1. `None` when neither is known.
    pub fn effective_start(&self) -> Option<i64> {
        if self.request.start_revision > 0 {
            return Some(self.request.start_revision);
        }
        self.responses.iter().find(|r| r.created).map(|r| r.revision + 1)
    }

    /// Whether the server canceled the watch because of compaction.
    fn compacted(&self) -> bool {
        self.responses.iter().any(|r| r.compact_revision > 0)
    }

    /// Responses with their fragments joined: (index of the first
    /// fragment, the response, all its events).
    fn logical(&self) -> Vec<(usize, &WatchResponse, Vec<&Event>)> {
        let mut out: Vec<(usize, &WatchResponse, Vec<&Event>)> = Vec::new();
        let mut open = false;
        for (i, r) in self.responses.iter().enumerate() {
            if open {
                let last = out.last_mut().expect("open fragment");
                last.1 = r;
                last.2.extend(r.events.iter());
            } else {
                out.push((i, r, r.events.iter().collect()));
            }
            open = r.fragment;
        }
        out
    }

    fn events(&self) -> impl Iterator<Item = &Event> {
        self.responses.iter().flat_map(|r| r.events.iter())
    }
}

/// Names one watch stream in a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchId {
    pub client: ClientId,
    pub watch_id: i64,
}

impl fmt::Display for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} watch {}", self.client, self.watch_id)
    }
}

/// A broken watch guarantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum WatchViolation {
    #[error("{watch}: not ordered: response {response} delivers revision {revision} after {previous}")]
    Unordered { watch: WatchId, response: usize, previous: i64, revision: i64 },
    #[error("{watch}: event {key:?}@{revision} delivered twice (response {response})")]
    Duplicate { watch: WatchId, response: usize, key: Bytes, revision: i64 },
    #[error("{watch}: revision {revision} not atomic: {detail}")]
    NotAtomic { watch: WatchId, revision: i64, detail: String },
    #[error("{watch}: gap: event {key:?}@{revision} never delivered though revisions {first}..={last} were")]
    Gap { watch: WatchId, key: Bytes, revision: i64, first: i64, last: i64 },
    #[error("{watch}: not resumable from {start}: expected {expected:?}, got {got:?}")]
    NotResumable { watch: WatchId, start: i64, expected: Option<(Bytes, i64)>, got: Option<(Bytes, i64)> },
    #[error(
        "{watch}: dishonest progress notification at revision {bookmark} (response {response}): {detail}"
    )]
    DishonestBookmark { watch: WatchId, response: usize, bookmark: i64, detail: String },
    #[error("{watch}: wrong prev_kv for {key:?}@{revision}: expected {expected:?}, got {got:?}")]
    WrongPrevKv {
        watch: WatchId,
        key: Bytes,
        revision: i64,
        expected: Option<KeyValue>,
        got: Option<KeyValue>,
    },
    #[error(
        "{watch}: event {key:?}@{revision} differs from the reference: expected {expected:?}, got {got:?}"
    )]
    EventMismatch {
        watch: WatchId,
        key: Bytes,
        revision: i64,
        expected: Option<(EventKind, KeyValue)>,
        got: (EventKind, KeyValue),
    },
    #[error("watches disagree on {key:?}@{revision}: {a:?} vs {b:?}")]
    Inconsistent { key: Bytes, revision: i64, a: (EventKind, KeyValue), b: (EventKind, KeyValue) },
}

/// The reference: every event of the keyspace in `(base_revision,
/// last_revision]`, in revision order, and optionally the keyspace at
/// `base_revision`.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    /// Events are complete after this revision.
    pub base_revision: i64,
    /// ... up to and including this one.
    pub last_revision: i64,
    /// The live keys at `base_revision`, when known (`Some(empty)` for a
    /// new cluster). Needed to check the prev_kv of a key's first event.
    pub initial: Option<BTreeMap<Bytes, KeyValue>>,
    events: Vec<Event>,
    by_key: HashMap<Bytes, Vec<usize>>,
    by_id: HashMap<(Bytes, i64), usize>,
}

impl EventLog {
    /// `events` sorted by revision (within a revision, in any order).
    pub fn new(
        base_revision: i64,
        last_revision: i64,
        initial: Option<BTreeMap<Bytes, KeyValue>>,
        mut events: Vec<Event>,
    ) -> EventLog {
        events.sort_by_key(|e| e.revision());
        let mut by_key: HashMap<Bytes, Vec<usize>> = HashMap::new();
        let mut by_id = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            by_key.entry(e.kv.key.clone()).or_default().push(i);
            by_id.insert(e.id(), i);
        }
        EventLog { base_revision, last_revision, initial, events, by_key, by_id }
    }

    /// Merges what the watches received (the union, first seen wins) into a
    /// reference; disagreements between watches are returned as
    /// [`WatchViolation::Inconsistent`]. It covers what at least one watch
    /// saw, from the earliest start to the latest event, with no initial
    /// state: fine for gaps seen by one watch but not another, not a proof
    /// that nothing was missed by all.
    pub fn from_watches(watches: &[WatchRecord]) -> (EventLog, Vec<WatchViolation>) {
        let mut seen: BTreeMap<(i64, Bytes), &Event> = BTreeMap::new();
        let mut violations = Vec::new();
        for w in watches {
            for e in w.events() {
                let slot = seen.entry((e.revision(), e.kv.key.clone())).or_insert(e);
                if slot.kind != e.kind || slot.kv != e.kv {
                    violations.push(WatchViolation::Inconsistent {
                        key: e.kv.key.clone(),
                        revision: e.revision(),
                        a: (slot.kind, slot.kv.clone()),
                        b: (e.kind, e.kv.clone()),
                    });
                }
            }
        }
        let base = watches.iter().filter_map(|w| w.effective_start()).min().map_or(0, |s| s - 1);
        let last = seen.keys().next_back().map_or(base, |(r, _)| *r);
        let events = seen.into_values().map(|e| Event { prev_kv: None, ..e.clone() }).collect();
        (EventLog::new(base, last, None, events), violations)
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The events of revisions `from..=to` on keys `[key, end)`, in order.
    pub fn matching<'a>(
        &'a self,
        w: &'a WatchRecord,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        let from = from.max(self.base_revision + 1);
        let to = to.min(self.last_revision);
        let start = self.events.partition_point(|e| e.revision() < from);
        self.events[start..]
            .iter()
            .take_while(move |e| e.revision() <= to)
            .filter(move |e| w.matches(e.kv.key.as_slice()))
    }

    fn get(&self, key: &Bytes, revision: i64) -> Option<&Event> {
        self.by_id.get(&(key.clone(), revision)).map(|&i| &self.events[i])
    }

    /// Whether the log speaks for `revision`.
    pub fn covers(&self, revision: i64) -> bool {
        revision > self.base_revision && revision <= self.last_revision
    }

    /// What `key` held just before `revision`: `Some(None)` for absent,
    /// `None` when the log cannot tell.
    pub fn value_before(&self, key: &Bytes, revision: i64) -> Option<Option<KeyValue>> {
        if revision - 1 > self.last_revision {
            return None;
        }
        let idx = self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let n = idx.partition_point(|&i| self.events[i].revision() < revision);
        if n > 0 {
            let e = &self.events[idx[n - 1]];
            return Some(match e.kind {
                EventKind::Put => Some(e.kv.clone()),
                EventKind::Delete => None,
            });
        }
        self.initial.as_ref().map(|init| init.get(key).cloned())
    }
}

/// **Ordered**: within a watch, event revisions never decrease, and every
/// response starts after the revisions of the previous one.
pub fn check_ordered(w: &WatchRecord) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    let mut last: Option<i64> = None;
    for (i, _, events) in w.logical() {
        let mut first_in_response = true;
        for e in events {
            if let Some(prev) = last {
                let bad = if first_in_response { e.revision() <= prev } else { e.revision() < prev };
                if bad {
                    out.push(WatchViolation::Unordered {
                        watch: w.id(),
                        response: i,
                        previous: prev,
                        revision: e.revision(),
                    });
                }
            }
            first_in_response = false;
            last = Some(last.map_or(e.revision(), |p| p.max(e.revision())));
        }
    }
    out
}

/// **Unique**: no (key, mod_revision) delivered twice on one watch.
pub fn check_unique(w: &WatchRecord) -> Vec<WatchViolation> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in w.responses.iter().enumerate() {
        for e in &r.events {
            if !seen.insert(e.id()) {
                out.push(WatchViolation::Duplicate {
                    watch: w.id(),
                    response: i,
                    key: e.kv.key.clone(),
                    revision: e.revision(),
                });
            }
        }
    }
    out
}

/// **Atomic**: the events of one revision arrive in one response (fragments
/// joined) and, with a reference, all of that revision's events on watched
/// keys are in it.
pub fn check_atomic(w: &WatchRecord, reference: Option<&EventLog>) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    let mut where_rev: BTreeMap<i64, BTreeSet<usize>> = BTreeMap::new();
    let mut delivered: HashMap<(Bytes, i64), usize> = HashMap::new();
    for (i, _, events) in w.logical() {
        for e in events {
            where_rev.entry(e.revision()).or_default().insert(i);
            delivered.insert(e.id(), i);
        }
    }
    for (rev, responses) in &where_rev {
        if responses.len() > 1 {
            out.push(WatchViolation::NotAtomic {
                watch: w.id(),
                revision: *rev,
                detail: format!("split over responses {responses:?}"),
            });
            continue;
        }
        let Some(reference) = reference else { continue };
        let response = *responses.first().expect("one response");
        for e in reference.matching(w, *rev, *rev) {
            if delivered.get(&e.id()) != Some(&response) {
                out.push(WatchViolation::NotAtomic {
                    watch: w.id(),
                    revision: *rev,
                    detail: format!("response {response} lacks {:?} of the same revision", e.kv.key),
                });
            }
        }
    }
    out
}

/// **Reliable**: between the first and the last revision a watch received,
/// every reference event on its keys was delivered (no gap).
pub fn check_reliable(w: &WatchRecord, reference: &EventLog) -> Vec<WatchViolation> {
    let delivered: HashSet<(Bytes, i64)> = w.events().map(Event::id).collect();
    let (Some(first), Some(last)) =
        (w.events().map(Event::revision).min(), w.events().map(Event::revision).max())
    else {
        return Vec::new();
    };
    reference
        .matching(w, first, last)
        .filter(|e| !delivered.contains(&e.id()))
        .map(|e| WatchViolation::Gap {
            watch: w.id(),
            key: e.kv.key.clone(),
            revision: e.revision(),
            first,
            last,
        })
        .collect()
}

/// **Resumable**: a watch from revision `S` receives exactly the reference
/// events on its keys with revision `>= S`, in order, up to the last one it
/// received. Skipped for a watch canceled by compaction.
pub fn check_resumable(w: &WatchRecord, reference: &EventLog) -> Vec<WatchViolation> {
    let Some(start) = w.effective_start() else { return Vec::new() };
    if w.compacted() {
        return Vec::new();
    }
    let got: Vec<&Event> = w.events().filter(|e| e.revision() > reference.base_revision).collect();
    let last = got.iter().map(|e| e.revision()).max().unwrap_or(start - 1);
    // Within one revision the order of keys is free: compare sorted.
    let norm = |mut v: Vec<(Bytes, i64)>| {
        v.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        v
    };
    let mut got_ids: Vec<(Bytes, i64)> = got.iter().map(|e| e.id()).collect();
    // Sort only within runs of equal revisions, keeping any disorder of
    // revisions visible.
    let mut i = 0;
    while i < got_ids.len() {
        let j = i + got_ids[i..].iter().take_while(|x| x.1 == got_ids[i].1).count();
        got_ids[i..j].sort();
        i = j;
    }
    let want = norm(reference.matching(w, start, last).map(Event::id).collect());
    for k in 0..got_ids.len().max(want.len()) {
        let (g, x) = (got_ids.get(k), want.get(k));
        if g != x {
            return vec![WatchViolation::NotResumable {
                watch: w.id(),
                start,
                expected: x.cloned(),
                got: g.cloned(),
            }];
        }
    }
    Vec::new()
}

/// **Bookmarkable**: a progress notification at revision `P` is honest —
/// nothing at or below `P` arrives after it, it does not go below what was
/// already delivered, and (with a reference) every event on the watched
/// keys from the start up to `P` was delivered before it.
pub fn check_bookmarkable(w: &WatchRecord, reference: Option<&EventLog>) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    let start = w.effective_start();
    let mut delivered: HashSet<(Bytes, i64)> = HashSet::new();
    let mut max_delivered = i64::MIN;
    let mut bookmarks: Vec<(usize, i64)> = Vec::new();
    for (i, r) in w.responses.iter().enumerate() {
        for e in &r.events {
            for &(bi, p) in &bookmarks {
                if e.revision() <= p {
                    out.push(WatchViolation::DishonestBookmark {
                        watch: w.id(),
                        response: bi,
                        bookmark: p,
                        detail: format!(
                            "event {:?}@{} arrived after it (response {i})",
                            e.kv.key,
                            e.revision()
                        ),
                    });
                }
            }
            delivered.insert(e.id());
            max_delivered = max_delivered.max(e.revision());
        }
        if !r.is_progress_notify() {
            continue;
        }
        let p = r.revision;
        if p < max_delivered {
            out.push(WatchViolation::DishonestBookmark {
                watch: w.id(),
                response: i,
                bookmark: p,
                detail: format!("below revision {max_delivered} already delivered"),
            });
        }
        if let (Some(reference), Some(start)) = (reference, start)
            && !w.compacted()
        {
            for e in reference.matching(w, start, p) {
                if !delivered.contains(&e.id()) {
                    out.push(WatchViolation::DishonestBookmark {
                        watch: w.id(),
                        response: i,
                        bookmark: p,
                        detail: format!("event {:?}@{} not delivered before it", e.kv.key, e.revision()),
                    });
                }
            }
        }
        bookmarks.push((i, p));
    }
    out
}

/// **prev_kv correct**: on a watch with `prev_kv`, every event carries what
/// the key held just before the event's revision (none if it was absent).
pub fn check_prev_kv(w: &WatchRecord, reference: &EventLog) -> Vec<WatchViolation> {
    if !w.request.prev_kv {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in w.events() {
        let Some(expected) = reference.value_before(&e.kv.key, e.revision()) else { continue };
        if expected != e.prev_kv {
            out.push(WatchViolation::WrongPrevKv {
                watch: w.id(),
                key: e.kv.key.clone(),
                revision: e.revision(),
                expected,
                got: e.prev_kv.clone(),
            });
        }
    }
    out
}

/// Every delivered event the reference speaks for is the reference's event
/// (same kind, same key-value with its revisions and version).
pub fn check_events_match(w: &WatchRecord, reference: &EventLog) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    for e in w.events() {
        if !reference.covers(e.revision()) {
            continue;
        }
        let expected = reference.get(&e.kv.key, e.revision());
        let ok = expected.is_some_and(|x| x.kind == e.kind && x.kv == e.kv) && w.matches(e.kv.key.as_slice());
        if !ok {
            out.push(WatchViolation::EventMismatch {
                watch: w.id(),
                key: e.kv.key.clone(),
                revision: e.revision(),
                expected: expected.map(|x| (x.kind, x.kv.clone())),
                got: (e.kind, e.kv.clone()),
            });
        }
    }
    out
}

/// Every validator on one watch (those needing a reference only with one).
pub fn check_watch(w: &WatchRecord, reference: Option<&EventLog>) -> Vec<WatchViolation> {
    let mut out = check_ordered(w);
    out.extend(check_unique(w));
    out.extend(check_atomic(w, reference));
    out.extend(check_bookmarkable(w, reference));
    if let Some(r) = reference {
        out.extend(check_reliable(w, r));
        out.extend(check_resumable(w, r));
        out.extend(check_prev_kv(w, r));
        out.extend(check_events_match(w, r));
    }
    out
}

/// [`check_watch`] on every watch.
pub fn check_watches(watches: &[WatchRecord], reference: Option<&EventLog>) -> Vec<WatchViolation> {
    watches.iter().flat_map(|w| check_watch(w, reference)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::history::{History, Outcome, PutRequest, Request, TxnOp, TxnRequest};
    use crate::checker::linearizability::{CheckOptions, check_linearizable, reference_events};
    use crate::checker::testgen::watch_from_reference;

    /// a=1@2, b=1@3, {a=2, c=1}@4 (one txn), delete b@5, a=3@6.
    fn reference() -> EventLog {
        let mut h = History::new();
        let txn = Request::Txn(TxnRequest {
            success: vec![
                TxnOp::Put(PutRequest { key: "a".into(), value: "2".into(), ..Default::default() }),
                TxnOp::Put(PutRequest { key: "c".into(), value: "1".into(), ..Default::default() }),
            ],
            ..Default::default()
        });
        let reqs = [
            Request::put("a", "1"),
            Request::put("b", "1"),
            txn,
            Request::delete("b"),
            Request::put("a", "3"),
        ];
        // Record what the model answers, sequentially.
        let mut m = crate::checker::KvModel::new(1);
        for (i, r) in reqs.into_iter().enumerate() {
            let resp = m.apply(&r, None, None).0.expect("applies");
            h.record(1, i as u64 * 10, i as u64 * 10 + 5, r, Outcome::Ok(resp));
        }
        let report = check_linearizable(&h, &CheckOptions::default());
        assert!(report.is_linearizable());
        let log = reference_events(&h, &report.linearization);
        assert_eq!((log.base_revision, log.last_revision, log.events().len()), (1, 6, 6));
        log
    }

    fn all(log: &EventLog, start: i64) -> WatchRecord {
        watch_from_reference(log, ("a", "\0"), start, 6, true, 1000)
    }

    #[test]
    fn a_faithful_watch_passes_every_validator() {
        let log = reference();
        for start in [2, 4] {
            assert_eq!(check_watch(&all(&log, start), Some(&log)), vec![], "start {start}");
        }
        // From "now" (created at 3): events from 4 on, only key a.
        let w = watch_from_reference(&log, ("a", ""), 0, 3, true, 1000);
        assert_eq!(w.events().map(|e| e.revision()).collect::<Vec<_>>(), vec![4, 6]);
        assert_eq!(check_watch(&w, Some(&log)), vec![]);
        // Fragments of one response count as one response.
        let mut w = all(&log, 2);
        let rev4 = w.responses.iter().position(|r| r.revision == 4).expect("rev 4");
        let mut second = w.responses[rev4].clone();
        second.events = vec![w.responses[rev4].events.pop().expect("two events")];
        w.responses[rev4].fragment = true;
        w.responses.insert(rev4 + 1, second);
        assert_eq!(check_watch(&w, Some(&log)), vec![]);
        // An honest bookmark.
        let mut w = all(&log, 2);
        w.responses.push(WatchResponse { time: 999, revision: 6, ..Default::default() });
        assert_eq!(check_watch(&w, Some(&log)), vec![]);
    }

    #[test]
    fn catches_a_reordered_event() {
        let log = reference();
        let mut w = all(&log, 2);
        w.responses.swap(1, 2); // revision 3 before revision 2
        let v = check_ordered(&w);
        assert!(
            matches!(v.as_slice(), [WatchViolation::Unordered { previous: 3, revision: 2, .. }]),
            "{v:?}"
        );
        assert_eq!(check_unique(&w), vec![]);
        // Inside one response too.
        let mut w = all(&log, 2);
        let mut merged: Vec<Event> = w.responses.drain(1..3).flat_map(|r| r.events).collect();
        merged.reverse();
        w.responses.insert(1, WatchResponse { revision: 3, events: merged, ..Default::default() });
        assert!(matches!(
            check_ordered(&w).as_slice(),
            [WatchViolation::Unordered { previous: 3, revision: 2, .. }]
        ));
    }

    #[test]
    fn catches_a_duplicated_event() {
        let log = reference();
        let mut w = all(&log, 2);
        let again = w.responses[1].events[0].clone();
        w.responses.last_mut().expect("last").events.insert(0, again);
        let v = check_unique(&w);
        assert!(matches!(v.as_slice(), [WatchViolation::Duplicate { revision: 2, .. }]), "{v:?}");
        assert!(!check_ordered(&w).is_empty(), "a duplicate of an old event is also out of order");
    }

    #[test]
    fn catches_a_revision_split_over_responses() {
        let log = reference();
        let mut w = all(&log, 2);
        let rev4 = w.responses.iter().position(|r| r.revision == 4).expect("rev 4");
        let mut second = w.responses[rev4].clone();
        second.events = vec![w.responses[rev4].events.pop().expect("two events")];
        w.responses.insert(rev4 + 1, second);
        let v = check_atomic(&w, None);
        assert!(matches!(v.as_slice(), [WatchViolation::NotAtomic { revision: 4, .. }]), "{v:?}");
        // Half a revision, the other half never sent: only the reference knows.
        w.responses.remove(rev4 + 1);
        assert_eq!(check_atomic(&w, None), vec![]);
        let v = check_atomic(&w, Some(&log));
        assert!(matches!(v.as_slice(), [WatchViolation::NotAtomic { revision: 4, .. }]), "{v:?}");
    }

    #[test]
    fn catches_a_gap() {
        let log = reference();
        let mut w = all(&log, 2);
        let rev3 = w.responses.iter().position(|r| r.revision == 3).expect("rev 3");
        w.responses.remove(rev3);
        let v = check_reliable(&w, &log);
        assert!(
            matches!(v.as_slice(), [WatchViolation::Gap { revision: 3, first: 2, last: 6, key, .. }] if key.0 == b"b"),
            "{v:?}"
        );
        assert_eq!(check_ordered(&w), vec![]);
        assert_eq!(check_unique(&w), vec![]);
    }

    #[test]
    fn catches_a_watch_that_does_not_resume_where_asked() {
        let log = reference();
        // Started at 2 but the first event delivered is at 3: no gap between
        // what it got, but not resumed at 2.
        let mut w = all(&log, 2);
        w.responses.remove(1);
        assert_eq!(check_reliable(&w, &log), vec![]);
        let v = check_resumable(&w, &log);
        assert!(
            matches!(
                &v[..],
                [WatchViolation::NotResumable { start: 2, expected: Some((_, 2)), got: Some((_, 3)), .. }]
            ),
            "{v:?}"
        );
        // An event from before the start revision.
        let mut w = all(&log, 4);
        let early = all(&log, 2).responses[2].clone();
        w.responses.insert(1, early);
        assert!(!check_resumable(&w, &log).is_empty());
    }

    #[test]
    fn catches_a_dishonest_bookmark() {
        let log = reference();
        let mut w = all(&log, 2);
        // A progress notification at 4 sent before revision 4 was.
        let rev4 = w.responses.iter().position(|r| r.revision == 4).expect("rev 4");
        w.responses.insert(rev4, WatchResponse { time: 1, revision: 4, ..Default::default() });
        let v = check_bookmarkable(&w, None);
        assert!(
            matches!(v.as_slice(), [WatchViolation::DishonestBookmark { bookmark: 4, .. }, ..]),
            "without a reference: events at or below it arrive later: {v:?}"
        );
        let with_ref = check_bookmarkable(&w, Some(&log));
        assert!(with_ref.len() > v.len(), "with a reference, the missing events are named too: {with_ref:?}");
        // A bookmark below what was already delivered.
        let mut w = all(&log, 2);
        w.responses.push(WatchResponse { time: 1, revision: 5, ..Default::default() });
        assert!(matches!(
            check_bookmarkable(&w, None).as_slice(),
            [WatchViolation::DishonestBookmark { bookmark: 5, .. }]
        ));
    }

    #[test]
    fn catches_a_wrong_prev_kv() {
        let log = reference();
        let mut w = all(&log, 2);
        let rev6 = w.responses.iter().position(|r| !r.created && r.revision == 6).expect("rev 6");
        // a=3@6 replaced a=2@4; claim it replaced a=1@2.
        let stale = w.responses[1].events[0].kv.clone();
        w.responses[rev6].events[0].prev_kv = Some(stale);
        let v = check_prev_kv(&w, &log);
        assert!(matches!(v.as_slice(), [WatchViolation::WrongPrevKv { revision: 6, .. }]), "{v:?}");
        // The first put of a key has no prev_kv.
        let mut w = all(&log, 2);
        w.responses[1].events[0].prev_kv = w.responses[3].events[0].prev_kv.clone();
        assert!(matches!(
            check_prev_kv(&w, &log).as_slice(),
            [WatchViolation::WrongPrevKv { revision: 2, expected: None, .. }]
        ));
        // Not asked for: not checked.
        let mut w = all(&log, 2);
        w.request.prev_kv = false;
        w.responses[1].events[0].prev_kv = Some(Default::default());
        assert_eq!(check_prev_kv(&w, &log), vec![]);
    }

    #[test]
    fn catches_an_event_that_differs_from_the_reference() {
        let log = reference();
        let mut w = all(&log, 2);
        w.responses[1].events[0].kv.value = "other".into();
        let v = check_events_match(&w, &log);
        assert!(matches!(v.as_slice(), [WatchViolation::EventMismatch { revision: 2, .. }]), "{v:?}");
        // Two watches disagreeing is caught without any reference.
        let (_, inconsistent) = EventLog::from_watches(&[w, all(&log, 2)]);
        assert!(matches!(inconsistent.as_slice(), [WatchViolation::Inconsistent { revision: 2, .. }]));
    }

    #[test]
    fn a_reference_merged_from_watches_finds_what_one_watch_missed() {
        let log = reference();
        let full = all(&log, 2);
        let mut missing = all(&log, 2);
        missing.watch_id = 2;
        missing.responses.remove(2);
        let (merged, v) = EventLog::from_watches(&[full, missing.clone()]);
        assert_eq!(v, vec![]);
        assert!(matches!(
            check_reliable(&missing, &merged).as_slice(),
            [WatchViolation::Gap { revision: 3, .. }]
        ));
        // Without the initial state, the first prev_kv of a key cannot be judged.
        assert_eq!(merged.value_before(&"a".into(), 2), None);
        assert_eq!(merged.value_before(&"a".into(), 4).flatten().map(|kv| kv.mod_revision), Some(2));
    }
}
