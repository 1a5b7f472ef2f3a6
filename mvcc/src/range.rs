//! Range with etcd's semantics, over any [`View`] (a snapshot for plain
//! reads, the writer's own view inside a Txn).
//!
//! As etcd's server does: when the result must be sorted or filtered by
//! revision, every key is fetched and the limit applied afterwards; `count`
//! is the number of keys in the range at the revision and ignores `limit` and
//! the revision filters; `more` says keys were left out by `limit`; the
//! header revision is the store's current revision, not the one read at.

use bytes::Bytes;
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use keelson_proto::mvccpb::KeyValue;

use crate::error::{MvccError, Result};
use crate::index::KeyRange;
use crate::key_index::KeyAt;

/// What a range needs from the store.
pub(crate) trait View {
    /// The revision "latest" means for this view.
    fn current(&self) -> i64;
    fn compacted(&self) -> i64;
    /// Keys alive at `at` in `range` (up to `limit`: `usize::MAX` for all, 0
    /// to only count) and their total.
    fn keys(&self, range: KeyRange<'_>, at: i64, limit: usize) -> Result<(Vec<(Bytes, KeyAt)>, usize)>;
    /// The stored value of `key` at `at.modified`.
    fn load(&self, key: &Bytes, at: &KeyAt) -> Result<KeyValue>;
}

/// Resolves a requested revision (<= 0 = latest) against a view.
pub(crate) fn read_revision(view: &impl View, rev: i64) -> Result<i64> {
    let current = view.current();
    if rev > current {
        return Err(MvccError::FutureRev { current });
    }
    let at = if rev <= 0 { current } else { rev };
    if at < view.compacted() {
        return Err(MvccError::Compacted { compacted: view.compacted() });
    }
    Ok(at)
}

pub(crate) fn range(view: &impl View, req: &RangeRequest) -> Result<RangeResponse> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    let at = read_revision(view, req.revision)?;
    let range = KeyRange::new(&req.key, &req.range_end);
    let header = Some(ResponseHeader { revision: view.current(), ..Default::default() });

    if req.count_only {
        let (_, total) = view.keys(range, at, 0)?;
        return Ok(RangeResponse { header, kvs: vec![], more: false, count: total as i64 });
    }

    let sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Fetch one more than the limit to know whether there is more; fetch
    // everything when sorting or filtering comes first.
    let fetch = if sort_order != SortOrder::None || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        req.limit as usize + 1
    };
    let (found, total) = view.keys(range, at, fetch)?;
    let mut kvs = Vec::with_capacity(found.len());
    for (key, state) in &found {
        if filtered && !passes_filters(req, state) {
            continue;
        }
        kvs.push(view.load(key, state)?);
    }

    let order = match (sort_target, sort_order) {
        // Keys come out in ascending key order already.
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (t, SortOrder::None) if t != SortTarget::Key => SortOrder::Ascend,
        (_, o) => o,
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| compare_by(sort_target, a, b));
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse { header, kvs, more, count: total as i64 })
}

fn passes_filters(req: &RangeRequest, s: &KeyAt) -> bool {
    let m = s.modified.main;
    let c = s.created.main;
    !(req.max_mod_revision != 0 && m > req.max_mod_revision
        || req.min_mod_revision != 0 && m < req.min_mod_revision
        || req.max_create_revision != 0 && c > req.max_create_revision
        || req.min_create_revision != 0 && c < req.min_create_revision)
}

fn compare_by(target: SortTarget, a: &KeyValue, b: &KeyValue) -> std::cmp::Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}
