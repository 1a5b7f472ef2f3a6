//! `/health` and `/metrics` over plain HTTP, as etcd serves them on its
//! client URLs and on `--listen-metrics-urls`.
//!
//! `/health` answers `{"health":"true","reason":""}` when the member has a
//! leader, no alarm is raised and a linearizable read completes within a
//! second; otherwise `"false"` with the reason and HTTP 503.
//! `/metrics` is Prometheus text with etcd's metric names.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::backend::Backend;

/// The `/health` and `/metrics` routes.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    Router::new().route("/health", get(health::<B>)).route("/metrics", get(metrics::<B>)).with_state(backend)
}

async fn health<B: Backend>(State(b): State<Arc<B>>) -> impl IntoResponse {
    let reason = if b.status().leader == 0 {
        Some("RAFT NO LEADER".to_string())
    } else if let Some(a) = b.store().alarms().first() {
        Some(format!("ALARM {}", alarm_name(a.alarm)))
    } else {
        match tokio::time::timeout(Duration::from_secs(1), b.read_barrier()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("QGET ERROR:{e}")),
            Err(_) => Some("QGET ERROR:timeout".to_string()),
        }
    };
    let (code, body) = match reason {
        None => (StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, format!(r#"{{"health":"false","reason":"{r}"}}"#)),
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

fn alarm_name(a: i32) -> &'static str {
    match a {
        1 => "NOSPACE",
        2 => "CORRUPT",
        _ => "NONE",
    }
}

async fn metrics<B: Backend>(State(b): State<Arc<B>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(b.as_ref()))
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// The metrics page.
pub fn render<B: Backend>(b: &B) -> String {
    let mut out = String::new();
    let status = b.status();
    let store = b.store();
    let raft = b.raft_counters();
    let hub = b.hub().stats();
    gauge(
        &mut out,
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u8::from(status.leader != 0),
    );
    gauge(
        &mut out,
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        u8::from(status.leader != 0 && status.leader == status.member_id),
    );
    gauge(
        &mut out,
        "etcd_server_is_learner",
        "Whether or not this member is a learner.",
        u8::from(status.is_learner),
    );
    counter(
        &mut out,
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        raft.leader_changes,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        raft.proposals_committed,
    );
    gauge(
        &mut out,
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        raft.proposals_applied,
    );
    counter(
        &mut out,
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        raft.proposals_failed,
    );
    gauge(
        &mut out,
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        store.config().quota_bytes,
    );
    let size = store.db_size();
    gauge(
        &mut out,
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        size,
    );
    gauge(
        &mut out,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        size,
    );
    gauge(&mut out, "etcd_debugging_mvcc_keys_total", "Total number of keys.", store.index_len());
    gauge(&mut out, "etcd_mvcc_current_revision", "The current revision of store.", store.current_revision());
    gauge(
        &mut out,
        "etcd_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        store.compacted_revision(),
    );
    gauge(&mut out, "etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", hub.streams);
    gauge(&mut out, "etcd_debugging_mvcc_watcher_total", "Total number of watchers.", hub.watchers);
    gauge(
        &mut out,
        "etcd_debugging_mvcc_slow_watcher_total",
        "Total number of unsynced slow watchers.",
        hub.unsynced + hub.parked,
    );
    let name = "etcd_disk_wal_fsync_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} The latency distributions of fsync called by WAL.\n# TYPE {name} histogram"
    );
    for (le, count) in raft.fsync_bounds.iter().zip(&raft.fsync_buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", raft.fsync_count);
    let _ = writeln!(out, "{name}_sum {}", raft.fsync_sum_seconds);
    let _ = writeln!(out, "{name}_count {}", raft.fsync_count);
    out
}
