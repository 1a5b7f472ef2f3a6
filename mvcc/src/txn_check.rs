//! Request checks that need no data, as etcd's API layer makes them: empty
//! keys, flag conflicts, the Txn operation limit and the rule that a Txn
//! branch changes a key at most once (etcd `checkIntervals`). The gRPC layer
//! runs them before proposing; the store runs them again when applying.

use std::collections::HashSet;

use bytes::Bytes;
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

use crate::error::{MvccError, Result};

/// Bytes a stored key-value costs beyond its key and value, for the quota
/// (etcd's `kvOverhead`).
const KV_OVERHEAD: u64 = 256;

pub fn put_cost(req: &PutRequest) -> u64 {
    KV_OVERHEAD + req.key.len() as u64 + req.value.len() as u64
}

pub fn check_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn before anything runs: operation counts (compares and each
/// branch at most `max_ops`, nested Txns within what is left), keys, and
/// duplicate writes in each branch.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max_ops {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) if r.key.is_empty() => return Err(MvccError::EmptyKey),
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(Request::RequestTxn(t)) => check_txn(t, max_ops - ops)?,
            _ => {}
        }
    }
    intervals(&req.success)?;
    intervals(&req.failure)?;
    Ok(())
}

/// Deleted ranges, `[start, end)` with `None` for unbounded.
#[derive(Default)]
struct Dels(Vec<(Bytes, Option<Bytes>)>);

impl Dels {
    fn contains(&self, k: &[u8]) -> bool {
        self.0.iter().any(|(s, e)| k >= s.as_ref() && e.as_ref().is_none_or(|e| k < e.as_ref()))
    }
}

/// The puts and deletes of one branch (nested branches folded in); fails
/// on a key put twice or put inside a deleted range.
fn intervals(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Dels)> {
    let mut dels = Dels::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                let mut e = d.key.to_vec();
                e.push(0);
                Some(Bytes::from(e))
            } else {
                Some(d.range_end.clone())
            };
            dels.0.push((d.key.clone(), end));
        }
    }
    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else { continue };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // Then and else exclude each other: the same key in both is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || dels.contains(k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.0.extend(dels_then.0);
        dels.0.extend(dels_else.0);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else { continue };
        if puts.contains(&p.key) || dels.contains(&p.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from(k.to_string()),
                range_end: Bytes::from(end.to_string()),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }

    #[test]
    fn duplicate_writes_are_rejected() {
        assert!(check_txn(&txn(vec![put("a"), put("b")], vec![put("a")]), 128).is_ok());
        assert!(matches!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128),
            Err(MvccError::DuplicateKey)
        ));
        assert!(matches!(
            check_txn(&txn(vec![put("b"), del("a", "c")], vec![]), 128),
            Err(MvccError::DuplicateKey)
        ));
        // Deletes may overlap each other.
        assert!(check_txn(&txn(vec![del("a", "c"), del("b", "")], vec![]), 128).is_ok());
        let nested = RequestOp { request: Some(Request::RequestTxn(txn(vec![put("a")], vec![put("a")]))) };
        assert!(check_txn(&txn(vec![nested.clone()], vec![]), 128).is_ok());
        assert!(matches!(check_txn(&txn(vec![nested, put("a")], vec![]), 128), Err(MvccError::DuplicateKey)));
    }

    #[test]
    fn operation_limit() {
        let ops: Vec<_> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(check_txn(&txn(ops.clone(), vec![]), 128), Err(MvccError::TooManyOps)));
        assert!(check_txn(&txn(ops[..128].to_vec(), vec![]), 128).is_ok());
    }
}
