//! Test-only: random concurrent-looking histories made from a sequential
//! execution of the model, a brute-force linearizability oracle, and
//! response mutations.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{
    Bytes, Compare, CompareOp, CompareTarget, DeleteRequest, History, Outcome, PutRequest, RangeRequest,
    Request, Response, TxnOp, TxnOpResponse, TxnRequest, prefix_end,
};
use super::model::KvModel;

#[derive(Clone, Debug)]
pub struct GenOpts {
    pub ops: usize,
    pub keys: usize,
    /// Each operation's interval extends up to this far either side of its
    /// linearization point; points are 100 apart.
    pub spread: u64,
    pub unknown_pct: u32,
    pub failed_pct: u32,
}

impl Default for GenOpts {
    fn default() -> GenOpts {
        GenOpts { ops: 60, keys: 4, spread: 300, unknown_pct: 8, failed_pct: 4 }
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn key(rng: &mut StdRng, keys: usize) -> Bytes {
    format!("k{}", rng.random_range(0..keys)).into()
}

fn random_get(rng: &mut StdRng, m: &KvModel, keys: usize) -> RangeRequest {
    let mut r = RangeRequest { key: key(rng, keys), ..Default::default() };
    if rng.random_bool(0.35) {
        r.key = "k".into();
        r.range_end = prefix_end(b"k");
        if rng.random_bool(0.4) {
            r.limit = rng.random_range(1..3);
        }
        if rng.random_bool(0.15) {
            r.count_only = true;
        }
    }
    if rng.random_bool(0.2) {
        r.revision = rng.random_range(1..=m.revision());
    }
    r
}

fn random_request(
    rng: &mut StdRng,
    m: &KvModel,
    leases: &[i64],
    next_lease: &mut i64,
    i: usize,
    keys: usize,
) -> Request {
    let value: Bytes = format!("v{i}").into();
    match rng.random_range(0..100) {
        0..30 => Request::Range(random_get(rng, m, keys)),
        30..55 => {
            let lease = if !leases.is_empty() && rng.random_bool(0.15) {
                leases[rng.random_range(0..leases.len())]
            } else {
                0
            };
            Request::Put(PutRequest { key: key(rng, keys), value, lease, prev_kv: rng.random_bool(0.3) })
        }
        55..65 => {
            let mut d =
                DeleteRequest { key: key(rng, keys), prev_kv: rng.random_bool(0.3), ..Default::default() };
            if rng.random_bool(0.25) {
                d.range_end = format!("k{}", rng.random_range(1..=keys)).into();
            }
            Request::DeleteRange(d)
        }
        65..90 => {
            let k = key(rng, keys);
            let cur = m.get(k.as_slice(), 0);
            let target = match rng.random_range(0..4) {
                0 => CompareTarget::ModRevision(match (&cur, rng.random_bool(0.7)) {
                    (Some(kv), true) => kv.mod_revision,
                    _ => rng.random_range(0..=m.revision()),
                }),
                1 => CompareTarget::Version(cur.as_ref().map_or(0, |kv| kv.version)),
                2 => CompareTarget::CreateRevision(rng.random_range(0..=m.revision())),
                _ => CompareTarget::Value(match (&cur, rng.random_bool(0.6)) {
                    (Some(kv), true) => kv.value.clone(),
                    _ => "zz".into(),
                }),
            };
            let op = [
                CompareOp::Equal,
                CompareOp::Equal,
                CompareOp::NotEqual,
                CompareOp::Less,
                CompareOp::Greater,
            ][rng.random_range(0..5)];
            let other: Bytes = format!("k{}", (k.0[1] - b'0' + 1) as usize % keys).into();
            let success = match rng.random_range(0..3) {
                0 => vec![TxnOp::Put(PutRequest {
                    key: k.clone(),
                    value,
                    lease: 0,
                    prev_kv: rng.random_bool(0.5),
                })],
                1 => vec![
                    TxnOp::Put(PutRequest { key: k.clone(), value, ..Default::default() }),
                    TxnOp::Delete(DeleteRequest { key: other, ..Default::default() }),
                    TxnOp::Range(RangeRequest { key: k.clone(), ..Default::default() }),
                ],
                _ => {
                    vec![TxnOp::Delete(DeleteRequest { key: k.clone(), prev_kv: true, ..Default::default() })]
                }
            };
            let failure = vec![TxnOp::Range(RangeRequest { key: k.clone(), ..Default::default() })];
            Request::Txn(TxnRequest { compare: vec![Compare { key: k, op, target }], success, failure })
        }
        90..95 => {
            *next_lease += 1;
            Request::LeaseGrant { id: *next_lease, ttl: 100 }
        }
        _ => Request::LeaseRevoke {
            id: if leases.is_empty() || rng.random_bool(0.2) {
                999
            } else {
                leases[rng.random_range(0..leases.len())]
            },
        },
    }
}

/// A history whose operations were executed one at a time by the model, at
/// points 100 apart, each recorded with an interval around its point;
/// clients are sequential. Unknown writes were applied or not at random.
pub fn generate(seed: u64, opts: &GenOpts) -> History {
    let mut rng = rng(seed);
    let mut m = KvModel::new(1);
    let mut h = History::new();
    let mut clients: Vec<u64> = Vec::new(); // last return per client
    let mut leases: Vec<i64> = Vec::new();
    let mut next_lease = 0;
    for i in 0..opts.ops {
        let point = (i as u64 + 1) * 100 + opts.spread;
        let req = random_request(&mut rng, &m, &leases, &mut next_lease, i, opts.keys);
        let call = point - rng.random_range(0..=opts.spread);
        let mut ret = point + rng.random_range(0..=opts.spread);
        let roll = rng.random_range(0..100);
        let outcome = if req.is_write() && roll < opts.unknown_pct {
            if rng.random_bool(0.5) {
                let _ = m.apply(&req, None, None);
            }
            Outcome::Unknown("timeout".into())
        } else if roll < opts.unknown_pct + opts.failed_pct {
            ret = call + 1;
            Outcome::Failed("rejected".into())
        } else {
            match m.apply(&req, None, None).0 {
                Ok(r) => Outcome::Ok(r),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        };
        leases = m_leases(&m, &leases, &req, &outcome);
        let client = match clients.iter().position(|&last| last < call) {
            Some(c) => c,
            None => {
                clients.push(0);
                clients.len() - 1
            }
        };
        clients[client] = ret;
        h.record(client as u64, call, ret, req, outcome);
    }
    h
}

/// The leases the generator may use next (approximate: only for picking).
fn m_leases(_m: &KvModel, leases: &[i64], req: &Request, outcome: &Outcome) -> Vec<i64> {
    let mut l = leases.to_vec();
    match (req, outcome) {
        (Request::LeaseGrant { id, .. }, Outcome::Ok(_)) => l.push(*id),
        (Request::LeaseRevoke { id }, Outcome::Ok(_)) => l.retain(|x| x != id),
        _ => {}
    }
    l
}

/// Exhaustive search, no memo, no ordering: the oracle for small histories.
pub fn brute_force(h: &History) -> bool {
    let ops: Vec<usize> = (0..h.operations.len())
        .filter(|&i| {
            let o = &h.operations[i];
            match o.outcome {
                Outcome::Failed(_) => false,
                Outcome::Unknown(_) => o.request.is_write(),
                Outcome::Ok(_) => true,
            }
        })
        .collect();
    let mut placed = vec![false; ops.len()];
    let mut m = KvModel::new(h.initial_revision);
    fn rec(h: &History, ops: &[usize], placed: &mut [bool], m: &mut KvModel) -> bool {
        let pending_definite =
            |j: usize, placed: &[bool]| !placed[j] && h.operations[ops[j]].response().is_some();
        if !(0..ops.len()).any(|j| pending_definite(j, placed)) {
            return true;
        }
        for b in 0..ops.len() {
            if placed[b] {
                continue;
            }
            let ob = &h.operations[ops[b]];
            let blocked = (0..ops.len()).any(|a| {
                a != b && pending_definite(a, placed) && h.operations[ops[a]].effective_return() < ob.call
            });
            if blocked {
                continue;
            }
            let (res, undo) = m.apply(&ob.request, ob.response(), None);
            let fits = ob.response().is_none_or(|r| res.as_ref() == Ok(r));
            if fits {
                placed[b] = true;
                if rec(h, ops, placed, m) {
                    return true;
                }
                placed[b] = false;
            }
            m.revert(undo);
        }
        false
    }
    rec(h, &ops, &mut placed, &mut m)
}

/// Changes one Ok response of `h` (chosen by `rng`); returns the index of
/// the operation changed, or None when no response could be changed.
pub fn mutate(h: &mut History, rng: &mut StdRng) -> Option<usize> {
    let oks: Vec<usize> =
        (0..h.operations.len()).filter(|&i| matches!(h.operations[i].outcome, Outcome::Ok(_))).collect();
    if oks.is_empty() {
        return None;
    }
    for _ in 0..20 {
        let i = oks[rng.random_range(0..oks.len())];
        let Outcome::Ok(resp) = &mut h.operations[i].outcome else { unreachable!() };
        let before = resp.clone();
        let bump = if rng.random_bool(0.5) { 1 } else { -1 };
        match (resp, rng.random_range(0..3)) {
            (Response::Range { revision, .. }, 0)
            | (Response::Put { revision, .. }, 0)
            | (Response::DeleteRange { revision, .. }, 0)
            | (Response::Txn { revision, .. }, 0)
            | (Response::LeaseGrant { revision, .. }, _)
            | (Response::LeaseRevoke { revision }, _) => *revision += bump,
            (Response::Range { kvs, count, .. }, 1) => {
                if kvs.is_empty() {
                    *count += bump;
                } else {
                    kvs[0].value = "mutated".into();
                }
            }
            (Response::Range { kvs, count, .. }, _) => {
                if kvs.pop().is_none() {
                    *count += 1;
                }
            }
            (Response::Put { prev_kv, .. }, _) => match prev_kv {
                Some(p) => p.mod_revision += bump,
                None => *prev_kv = Some(Default::default()),
            },
            (Response::DeleteRange { deleted, .. }, _) => *deleted += bump,
            (Response::Txn { succeeded, responses, .. }, 1) => match responses.first_mut() {
                Some(TxnOpResponse::Range { kvs, count, .. }) => {
                    if let Some(kv) = kvs.first_mut() {
                        kv.version += bump;
                    } else {
                        *count += 1;
                    }
                }
                Some(TxnOpResponse::Put { prev_kv }) => *prev_kv = None.or(Some(Default::default())),
                Some(TxnOpResponse::Delete { deleted, .. }) => *deleted += bump,
                None => *succeeded = !*succeeded,
            },
            (Response::Txn { succeeded, .. }, _) => *succeeded = !*succeeded,
        }
        if h.operations[i].response() != Some(&before) {
            return Some(i);
        }
    }
    None
}

/// A watch (client 7, id 1) that received exactly what `reference` says, one response per
/// revision, starting at `start` (the created response is at `created`),
/// with prev_kv when asked, on keys `[key, end)`. Every response arrives
/// at time `at` (on the history's clock: an event observes a write).
pub fn watch_from_reference(
    reference: &super::watch::EventLog,
    (key, end): (&str, &str),
    start: i64,
    created: i64,
    prev_kv: bool,
    at: u64,
) -> super::watch::WatchRecord {
    use super::watch::{WatchRecord, WatchRequest, WatchResponse};
    let request = WatchRequest {
        key: key.into(),
        range_end: end.into(),
        start_revision: start,
        prev_kv,
        progress_notify: false,
    };
    let mut w = WatchRecord { client: 7, watch_id: 1, request, responses: Vec::new() };
    w.responses.push(WatchResponse { time: at, revision: created, created: true, ..Default::default() });
    let from = if start > 0 { start } else { created + 1 };
    let mut by_rev: std::collections::BTreeMap<i64, Vec<super::watch::Event>> = Default::default();
    for e in reference.events() {
        if e.revision() >= from
            && super::history::in_range(e.kv.key.as_slice(), key.as_bytes(), end.as_bytes())
        {
            let mut e = e.clone();
            if !prev_kv {
                e.prev_kv = None;
            }
            by_rev.entry(e.revision()).or_default().push(e);
        }
    }
    for (rev, events) in by_rev {
        w.responses.push(WatchResponse { time: at, revision: rev, events, ..Default::default() });
    }
    w
}
