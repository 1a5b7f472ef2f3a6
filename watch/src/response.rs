//! Builders for the responses a stream carries, as etcd shapes them.

use keelson_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use keelson_proto::mvccpb::Event;

/// etcd's `InvalidWatchID`: the id of failed creates and of progress
/// notifications that speak for every watcher on the stream.
pub const INVALID_WATCH_ID: i64 = -1;

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision: rev, ..Default::default() })
}

pub(crate) fn created(rev: i64, watch_id: i64) -> WatchResponse {
    WatchResponse { header: header(rev), watch_id, created: true, ..Default::default() }
}

pub(crate) fn create_failed(rev: i64, reason: String) -> WatchResponse {
    WatchResponse {
        header: header(rev),
        watch_id: INVALID_WATCH_ID,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    }
}

pub(crate) fn canceled(rev: i64, watch_id: i64) -> WatchResponse {
    WatchResponse { header: header(rev), watch_id, canceled: true, ..Default::default() }
}

/// etcd cancels a compacted watcher with header revision 0 (the mvcc
/// response carries none); the hub sends its current revision, which clients
/// ignore here and which keeps header revisions monotonic on the stream.
pub(crate) fn compacted(rev: i64, watch_id: i64, compact_revision: i64) -> WatchResponse {
    WatchResponse { header: header(rev), watch_id, canceled: true, compact_revision, ..Default::default() }
}

pub(crate) fn progress(rev: i64, watch_id: i64) -> WatchResponse {
    WatchResponse { header: header(rev), watch_id, ..Default::default() }
}

pub(crate) fn events(rev: i64, watch_id: i64, events: Vec<Event>) -> WatchResponse {
    WatchResponse { header: header(rev), watch_id, events, ..Default::default() }
}

/// Whether `resp` is a progress notification (etcd's `IsProgressNotify`): no
/// events, not a create, cancel or compaction, and a revision.
pub fn is_progress_notify(resp: &WatchResponse) -> bool {
    resp.events.is_empty()
        && !resp.canceled
        && !resp.created
        && resp.compact_revision == 0
        && resp.header.as_ref().is_some_and(|h| h.revision != 0)
}
