//! Checkers for recorded histories of the robustness suite (issue 5).
//!
//! A harness records what its clients did into a [`History`] (KV
//! operations with call and return times and outcomes, and watch streams),
//! optionally reads the final keyspace into a [`FinalState`], and calls
//! [`check_history`]. Each checker can also be called alone:
//!
//! - [`check_linearizable`]: the KV operations against an etcd MVCC model;
//! - the watch validators in [`watch`] ([`check_ordered`], [`check_unique`],
//!   [`check_atomic`], [`check_reliable`], [`check_resumable`],
//!   [`check_bookmarkable`], [`check_prev_kv`], [`check_events_match`]);
//! - [`check_revisions_monotonic`] and [`check_no_lost_writes`].
//!
//! See `docs/design/robustness-checkers.md`.

pub mod history;
pub mod invariants;
pub mod linearizability;
pub mod model;
pub mod watch;

#[cfg(test)]
mod testgen;

use std::fmt;

pub use history::{
    Bytes, ClientId, Compaction, Compare, CompareOp, CompareTarget, DeleteRequest, History, KeyValue,
    Operation, Outcome, PutRequest, RangeRequest, Request, Response, TxnOp, TxnOpResponse, TxnRequest,
};
pub use invariants::{FinalState, InvariantViolation, check_no_lost_writes, check_revisions_monotonic};
pub use linearizability::{
    CheckOptions, Explanation, LinearizabilityReport, Verdict, check_linearizable, reference_events,
};
pub use model::KvModel;
pub use watch::{
    Event, EventKind, EventLog, WatchRecord, WatchRequest, WatchResponse, WatchViolation, check_atomic,
    check_bookmarkable, check_events_match, check_ordered, check_prev_kv, check_reliable, check_resumable,
    check_unique, check_watch, check_watches,
};

/// Everything the checkers found in one history.
#[derive(Debug)]
pub struct Report {
    pub linearizability: LinearizabilityReport,
    /// The reference the watches were checked against: from the
    /// linearization when there is one, else merged from the watches.
    pub reference_from_linearization: bool,
    pub watch: Vec<WatchViolation>,
    pub invariants: Vec<InvariantViolation>,
}

impl Report {
    /// No violation found and the linearizability search finished.
    pub fn passed(&self) -> bool {
        self.linearizability.is_linearizable() && self.watch.is_empty() && self.invariants.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.linearizability;
        writeln!(
            f,
            "linearizability: {:?} ({} steps, {} segments, {:?})",
            l.verdict, l.steps, l.segments, l.elapsed
        )?;
        if let Some(e) = &l.explanation {
            write!(f, "{e}")?;
        }
        for v in &self.watch {
            writeln!(f, "watch: {v}")?;
        }
        for v in &self.invariants {
            writeln!(f, "invariant: {v}")?;
        }
        Ok(())
    }
}

/// Runs every checker on `history`. `final_state` (a linearizable read of
/// the whole keyspace after the run) enables the lost-write check.
pub fn check_history(history: &History, final_state: Option<&FinalState>, opts: &CheckOptions) -> Report {
    let linearizability = check_linearizable(history, opts);
    let (merged, mut watch) = EventLog::from_watches(&history.watches);
    let from_lin =
        linearizability.is_linearizable().then(|| reference_events(history, &linearizability.linearization));
    watch.extend(check_watches(&history.watches, Some(from_lin.as_ref().unwrap_or(&merged))));
    watch.retain(|v| !prev_kv_compacted(history, v));
    let mut invariants = check_revisions_monotonic(history);
    if let Some(fs) = final_state {
        invariants.extend(check_no_lost_writes(history, fs, from_lin.as_ref()));
    }
    Report { linearizability, reference_from_linearization: from_lin.is_some(), watch, invariants }
}

/// A missing prev_kv that etcd's API allows: "if the previous KV is already
/// compacted, nothing will be returned" — some Compact at a revision above
/// the event's previous one was sent before the event arrived.
fn prev_kv_compacted(history: &History, v: &WatchViolation) -> bool {
    let WatchViolation::WrongPrevKv { watch, key, revision, expected: Some(_), got: None } = v else {
        return false;
    };
    let arrived = history
        .watches
        .iter()
        .filter(|w| w.client == watch.client && w.watch_id == watch.watch_id)
        .flat_map(|w| &w.responses)
        .find(|r| r.events.iter().any(|e| e.kv.key == *key && e.revision() == *revision))
        .map(|r| r.time);
    let Some(arrived) = arrived else { return false };
    history.compactions.iter().any(|c| c.time <= arrived && c.revision > *revision - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::linearizability::final_model;
    use crate::checker::testgen::{self, GenOpts};

    /// Two Unknown puts, nothing but a count says both happened; a watch
    /// saw one of them at revision 4. The linearization (and so the watch
    /// reference) must put it there, not in the first free slot.
    #[test]
    fn a_write_seen_by_a_watch_is_pinned_to_its_revision() {
        let mut h = History::new();
        h.record(1, 0, 10, Request::put("a", "0"), Outcome::Ok(Response::Put { revision: 2, prev_kv: None }));
        h.record(2, 20, 30, Request::put("b", "1"), Outcome::Unknown("timeout".into()));
        h.record(3, 20, 30, Request::put("c", "1"), Outcome::Unknown("timeout".into()));
        let count = Request::Range(RangeRequest {
            key: "a".into(),
            range_end: "\0".into(),
            count_only: true,
            ..Default::default()
        });
        h.record(
            1,
            100,
            110,
            count,
            Outcome::Ok(Response::Range { revision: 4, kvs: vec![], count: 3, more: false }),
        );
        let b1 = KeyValue {
            key: "b".into(),
            value: "1".into(),
            create_revision: 4,
            mod_revision: 4,
            version: 1,
            lease: 0,
        };
        h.watches.push(WatchRecord {
            client: 4,
            watch_id: 1,
            request: WatchRequest { key: "b".into(), start_revision: 2, ..Default::default() },
            responses: vec![WatchResponse {
                time: 90,
                revision: 4,
                events: vec![Event { kind: EventKind::Put, kv: b1, prev_kv: None }],
                ..Default::default()
            }],
        });
        let report = check_history(&h, None, &CheckOptions::default());
        assert!(report.passed(), "{report}");
        assert_eq!(report.linearizability.linearization, vec![0, 2, 1, 3]);
        // Seen at a revision no order can give it: not linearizable.
        h.watches[0].responses[0].events[0].kv.mod_revision = 5;
        let report = check_history(&h, None, &CheckOptions::default());
        assert_eq!(report.linearizability.verdict, Verdict::NotLinearizable, "{report}");
    }

    /// Two concurrent Unknown deletes that both took effect (a later put is
    /// at revision 6); a watch saw `b` deleted at 4 and `a` at 5. Deletes
    /// carry no unique value to pin them by, so the linearization used to
    /// put them in call order (`a` at 4), and the watch validators, checked
    /// against that reference, reported the server's correct order as
    /// gaps, non-atomic revisions and wrong events (soak, etcd-slow-disk,
    /// seed 13857542889864917053). The events a watch saw now steer the
    /// search: each revision a watch saw must have exactly those events.
    #[test]
    fn unknown_deletes_are_ordered_as_a_watch_saw_them() {
        let mut h = History::new();
        h.record(1, 0, 10, Request::put("a", "1"), Outcome::Ok(Response::Put { revision: 2, prev_kv: None }));
        h.record(
            1,
            11,
            19,
            Request::put("b", "1"),
            Outcome::Ok(Response::Put { revision: 3, prev_kv: None }),
        );
        h.record(2, 20, 30, Request::delete("a"), Outcome::Unknown("timeout".into()));
        h.record(3, 21, 30, Request::delete("b"), Outcome::Unknown("timeout".into()));
        h.record(
            1,
            100,
            110,
            Request::put("c", "1"),
            Outcome::Ok(Response::Put { revision: 6, prev_kv: None }),
        );
        let kv = |key: &str, value: &str, rev: i64| KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        };
        let tomb =
            |key: &str, rev: i64| KeyValue { key: key.into(), mod_revision: rev, ..Default::default() };
        let put = |kv: KeyValue| Event { kind: EventKind::Put, kv, prev_kv: None };
        let del = |key: &str, rev: i64, prev: KeyValue| Event {
            kind: EventKind::Delete,
            kv: tomb(key, rev),
            prev_kv: Some(prev),
        };
        let resp = |time: u64, revision: i64, events: Vec<Event>| WatchResponse {
            time,
            revision,
            events,
            ..Default::default()
        };
        h.watches.push(WatchRecord {
            client: 4,
            watch_id: 1,
            request: WatchRequest {
                key: "a".into(),
                range_end: "\0".into(),
                start_revision: 2,
                prev_kv: true,
                ..Default::default()
            },
            responses: vec![
                resp(12, 2, vec![put(kv("a", "1", 2))]),
                resp(19, 3, vec![put(kv("b", "1", 3))]),
                resp(40, 4, vec![del("b", 4, kv("b", "1", 3))]),
                resp(41, 5, vec![del("a", 5, kv("a", "1", 2))]),
                resp(105, 6, vec![put(kv("c", "1", 6))]),
            ],
        });
        let report = check_history(&h, None, &CheckOptions::default());
        assert!(report.passed(), "{report}");
        assert_eq!(report.linearizability.linearization, vec![0, 1, 3, 2, 4]);
        // A watch that saw both deletes at one revision matches no order:
        // the KV history is still linearizable (without the watch's
        // guidance), and the watch is what is reported.
        h.watches[0].responses[2].events.push(del("a", 4, kv("a", "1", 2)));
        h.watches[0].responses.remove(3);
        let report = check_history(&h, None, &CheckOptions::default());
        assert!(report.linearizability.is_linearizable(), "{report}");
        assert!(!report.watch.is_empty(), "{report}");
    }

    /// A prev_kv missing on an event is a violation unless a Compact past
    /// the previous version was sent before the event arrived.
    #[test]
    fn a_prev_kv_compacted_away_may_be_missing() {
        let mut h = History::new();
        h.record(1, 0, 10, Request::put("a", "1"), Outcome::Ok(Response::Put { revision: 2, prev_kv: None }));
        h.record(
            1,
            20,
            30,
            Request::put("a", "2"),
            Outcome::Ok(Response::Put { revision: 3, prev_kv: None }),
        );
        let kv = |value: &str, rev: i64, version: i64| KeyValue {
            key: "a".into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: rev,
            version,
            lease: 0,
        };
        let event = |prev_kv| Event { kind: EventKind::Put, kv: kv("2", 3, 2), prev_kv };
        let response =
            |e: Event| WatchResponse { time: 40, revision: 3, events: vec![e], ..Default::default() };
        h.watches.push(WatchRecord {
            client: 2,
            watch_id: 1,
            request: WatchRequest { key: "a".into(), start_revision: 3, prev_kv: true, ..Default::default() },
            responses: vec![response(event(None))],
        });
        let report = check_history(&h, None, &CheckOptions::default());
        assert!(report.watch.iter().any(|v| matches!(v, WatchViolation::WrongPrevKv { .. })), "{report}");
        // Compacted at 3 after the event arrived: still a violation.
        h.compactions.push(Compaction { time: 50, revision: 3 });
        assert!(!check_history(&h, None, &CheckOptions::default()).passed());
        // Before it arrived: etcd returns no prev_kv then.
        h.compactions[0].time = 35;
        let report = check_history(&h, None, &CheckOptions::default());
        assert!(report.passed(), "{report}");
        // A wrong prev_kv (not a missing one) is never excused.
        h.watches[0].responses = vec![response(event(Some(kv("x", 2, 1))))];
        assert!(!check_history(&h, None, &CheckOptions::default()).passed());
    }

    /// A generated history with watches and a final read that agree with
    /// it; then one planted fault of each kind.
    #[test]
    fn check_history_end_to_end() {
        let opts = GenOpts { ops: 400, keys: 5, spread: 300, unknown_pct: 5, failed_pct: 3 };
        let mut h = testgen::generate(5, &opts);
        let lin = check_linearizable(&h, &CheckOptions::default());
        assert!(lin.is_linearizable());
        let reference = reference_events(&h, &lin.linearization);
        let model = final_model(&h, &lin.linearization);
        let fs = FinalState { revision: model.revision(), kvs: model.snapshot(0) };
        let end = h.operations.iter().map(|o| o.ret).max().unwrap_or(0) + 1;
        h.watches.push(testgen::watch_from_reference(&reference, ("k", "l"), 2, 1, true, end));
        let mut from_now = testgen::watch_from_reference(&reference, ("k1", ""), 0, 40, true, end);
        from_now.client = 8;
        h.watches.push(from_now);
        let report = check_history(&h, Some(&fs), &CheckOptions::default());
        assert!(report.passed(), "{report}");
        assert!(report.reference_from_linearization);
        // Survives the trip through a history file.
        let back = History::from_json(&h.to_json()).expect("parses");
        assert!(check_history(&back, Some(&fs), &CheckOptions::default()).passed());

        // A watch misses an event in the middle.
        let mut gap = h.clone();
        gap.watches[0].responses.remove(10);
        let report = check_history(&gap, Some(&fs), &CheckOptions::default());
        assert!(!report.passed());
        assert!(report.watch.iter().any(|v| matches!(v, WatchViolation::Gap { .. })), "{report}");

        // The final read lost a key whose last write was an acknowledged put.
        let acked = |kv: &KeyValue| {
            h.operations.iter().any(|o| match (&o.request, o.response()) {
                (Request::Put(p), Some(r)) => p.key == kv.key && r.revision() == kv.mod_revision,
                _ => false,
            })
        };
        let victim = fs.kvs.iter().find(|kv| acked(kv)).expect("an acknowledged put survives").key.clone();
        let mut lost = fs.clone();
        lost.kvs.retain(|kv| kv.key != victim);
        let report = check_history(&h, Some(&lost), &CheckOptions::default());
        assert!(
            report.invariants.iter().any(|v| matches!(v, InvariantViolation::LostWrite { .. })),
            "{report}"
        );
    }
}
