//! Whole-run invariants that need no search: revisions never go backwards
//! as one client sees them, and no acknowledged write is lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{Bytes, ClientId, History, KeyValue, Outcome, Request, Response, TxnOp, in_range};
use super::watch::{EventKind, EventLog, WatchId};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum InvariantViolation {
    #[error("client {client}: revision went back from {from} (op #{before}) to {to} (op #{after})")]
    RevisionBackwards { client: ClientId, before: usize, from: i64, after: usize, to: i64 },
    #[error("{watch}: header revision went back from {from} to {to} at response {response}")]
    WatchRevisionBackwards { watch: WatchId, response: usize, from: i64, to: i64 },
    #[error("acknowledged write lost: op #{op} put {key:?} at revision {revision}: {detail}")]
    LostWrite { op: usize, key: Bytes, revision: i64, detail: String },
}

/// Revisions never go backwards per client: an answer a client received
/// after another one had returned carries a header revision at least as
/// high (this spans member restarts and reconnections to other members).
/// Watch streams: header revisions never decrease.
pub fn check_revisions_monotonic(history: &History) -> Vec<InvariantViolation> {
    let mut out = Vec::new();
    let mut by_client: BTreeMap<ClientId, Vec<usize>> = BTreeMap::new();
    for (i, o) in history.operations.iter().enumerate() {
        if matches!(o.outcome, Outcome::Ok(_)) {
            by_client.entry(o.client).or_default().push(i);
        }
    }
    for (client, mut ops) in by_client {
        let ops_ref = &history.operations;
        ops.sort_by_key(|&i| (ops_ref[i].call, i));
        let mut inflight: Vec<usize> = Vec::new();
        let mut best: Option<(i64, usize)> = None;
        for b in ops {
            let call = ops_ref[b].call;
            inflight.retain(|&a| {
                if ops_ref[a].ret <= call {
                    let rev = ops_ref[a].response().map_or(0, Response::revision);
                    if best.is_none_or(|(r, _)| rev > r) {
                        best = Some((rev, a));
                    }
                    false
                } else {
                    true
                }
            });
            let rev = ops_ref[b].response().map_or(0, Response::revision);
            if let Some((from, before)) = best
                && rev < from
            {
                out.push(InvariantViolation::RevisionBackwards { client, before, from, after: b, to: rev });
            }
            inflight.push(b);
        }
    }
    for w in &history.watches {
        let mut last = 0;
        for (i, r) in w.responses.iter().enumerate() {
            if r.revision == 0 {
                continue;
            }
            if r.revision < last {
                out.push(InvariantViolation::WatchRevisionBackwards {
                    watch: WatchId { client: w.client, watch_id: w.watch_id },
                    response: i,
                    from: last,
                    to: r.revision,
                });
            }
            last = last.max(r.revision);
        }
    }
    out
}

/// The keyspace at the end of a run, from a final linearizable read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// No acknowledged write lost: every put answered Ok (alone or in a Txn)
/// is in the final state at its revision, or superseded — the key holds a
/// later revision, or is gone and something could have deleted it after
/// (a delete or a Txn delete answered at a later revision or of unknown
/// outcome, a revoke of its lease; a put with a lease may also have
/// expired). `reference`, when given, also counts its delete events.
pub fn check_no_lost_writes(
    history: &History,
    final_state: &FinalState,
    reference: Option<&EventLog>,
) -> Vec<InvariantViolation> {
    let finals: BTreeMap<&Bytes, &KeyValue> = final_state.kvs.iter().map(|kv| (&kv.key, kv)).collect();
    let mut out = Vec::new();
    for (i, o) in history.operations.iter().enumerate() {
        let Some(resp) = o.response() else { continue };
        let rev = resp.revision();
        let puts: Vec<(&Bytes, &Bytes, i64)> = match (&o.request, resp) {
            (Request::Put(p), _) => vec![(&p.key, &p.value, p.lease)],
            (Request::Txn(t), Response::Txn { succeeded, .. }) => {
                let branch = if *succeeded { &t.success } else { &t.failure };
                branch
                    .iter()
                    .filter_map(|op| match op {
                        TxnOp::Put(p) => Some((&p.key, &p.value, p.lease)),
                        _ => None,
                    })
                    .collect()
            }
            _ => continue,
        };
        for (key, value, lease) in puts {
            let lost = |detail: String| InvariantViolation::LostWrite {
                op: i,
                key: key.clone(),
                revision: rev,
                detail,
            };
            if rev > final_state.revision {
                out.push(lost(format!("the final revision {} is below it", final_state.revision)));
                continue;
            }
            match finals.get(key) {
                Some(kv) if kv.mod_revision == rev && &kv.value != value => {
                    out.push(lost(format!("the final state holds {:?} at the same revision", kv.value)));
                }
                Some(kv) if kv.mod_revision < rev => {
                    out.push(lost(format!(
                        "the final state holds an older version (mod_revision {})",
                        kv.mod_revision
                    )));
                }
                Some(_) => {}
                None => {
                    if lease == 0 && !deleted_after(history, key, rev, reference) {
                        out.push(lost(
                            "absent from the final state and nothing deleted it after".to_string(),
                        ));
                    }
                }
            }
        }
    }
    out
}

fn deleted_after(history: &History, key: &Bytes, rev: i64, reference: Option<&EventLog>) -> bool {
    if let Some(r) = reference
        && r.events().iter().any(|e| e.kind == EventKind::Delete && &e.kv.key == key && e.revision() > rev)
    {
        return true;
    }
    let covers = |k: &Bytes, end: &Bytes| in_range(key.as_slice(), k.as_slice(), end.as_slice());
    history.operations.iter().any(|o| match (&o.request, &o.outcome) {
        (_, Outcome::Failed(_)) => false,
        (Request::DeleteRange(d), Outcome::Unknown(_)) => covers(&d.key, &d.range_end),
        (Request::DeleteRange(d), Outcome::Ok(r)) => {
            covers(&d.key, &d.range_end)
                && r.revision() > rev
                && matches!(r, Response::DeleteRange { deleted, .. } if *deleted > 0)
        }
        (Request::Txn(t), outcome) => {
            let branches: Vec<&Vec<TxnOp>> = match outcome {
                Outcome::Ok(Response::Txn { succeeded, revision, .. }) if *revision > rev => {
                    vec![if *succeeded { &t.success } else { &t.failure }]
                }
                Outcome::Ok(_) => vec![],
                _ => vec![&t.success, &t.failure],
            };
            branches
                .iter()
                .any(|b| b.iter().any(|op| matches!(op, TxnOp::Delete(d) if covers(&d.key, &d.range_end))))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::watch::{WatchRecord, WatchRequest, WatchResponse};

    fn get_ok(rev: i64) -> Outcome {
        Outcome::Ok(Response::Range { revision: rev, kvs: vec![], count: 0, more: false })
    }
    fn put_ok(rev: i64) -> Outcome {
        Outcome::Ok(Response::Put { revision: rev, prev_kv: None })
    }

    #[test]
    fn catches_a_revision_that_goes_backwards() {
        let mut h = History::new();
        h.record(1, 0, 10, Request::get("a"), get_ok(5));
        h.record(1, 20, 30, Request::get("a"), get_ok(5));
        h.record(2, 0, 50, Request::get("a"), get_ok(3)); // concurrent with both: another client
        assert_eq!(check_revisions_monotonic(&h), vec![]);
        // After a restart the client is answered from a member that is behind.
        h.record(1, 40, 45, Request::get("a"), get_ok(4));
        assert_eq!(
            check_revisions_monotonic(&h),
            vec![InvariantViolation::RevisionBackwards { client: 1, before: 0, from: 5, after: 3, to: 4 }]
        );
        // A watch stream's headers, likewise.
        let mut h = History::new();
        let r = |revision| WatchResponse { revision, ..Default::default() };
        h.watches.push(WatchRecord {
            client: 3,
            watch_id: 1,
            request: WatchRequest::default(),
            responses: vec![r(4), r(6), r(5)],
        });
        assert!(matches!(
            check_revisions_monotonic(&h).as_slice(),
            [InvariantViolation::WatchRevisionBackwards { response: 2, from: 6, to: 5, .. }]
        ));
    }

    #[test]
    fn catches_a_lost_write() {
        let mut h = History::new();
        h.record(1, 0, 10, Request::put("a", "1"), put_ok(2));
        h.record(1, 20, 30, Request::put("b", "1"), put_ok(3));
        h.record(1, 40, 50, Request::put("b", "2"), put_ok(4));
        let b2 = KeyValue {
            key: "b".into(),
            value: "2".into(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            lease: 0,
        };
        let a1 = KeyValue {
            key: "a".into(),
            value: "1".into(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: 0,
        };
        // b=1 is superseded by b=2: fine.
        let good = FinalState { revision: 4, kvs: vec![a1.clone(), b2.clone()] };
        assert_eq!(check_no_lost_writes(&h, &good, None), vec![]);
        // a=1 vanished and nothing deleted it.
        let lost = FinalState { revision: 4, kvs: vec![b2.clone()] };
        assert!(matches!(
            check_no_lost_writes(&h, &lost, None).as_slice(),
            [InvariantViolation::LostWrite { op: 0, revision: 2, .. }]
        ));
        // ... unless a delete of unknown outcome could have.
        h.record(2, 60, 70, Request::delete("a"), Outcome::Unknown("timeout".into()));
        assert_eq!(check_no_lost_writes(&h, &lost, None), vec![]);
        // b rolled back to its first version.
        let b1 = KeyValue { value: "1".into(), mod_revision: 3, version: 1, ..b2 };
        let rolled_back = FinalState { revision: 4, kvs: vec![a1.clone(), b1] };
        assert!(matches!(
            check_no_lost_writes(&h, &rolled_back, None).as_slice(),
            [InvariantViolation::LostWrite { op: 2, revision: 4, .. }]
        ));
        // The whole store went back in time.
        let behind = FinalState { revision: 3, kvs: vec![a1] };
        assert!(!check_no_lost_writes(&h, &behind, None).is_empty());
    }
}
