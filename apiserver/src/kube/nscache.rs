//! The namespaces as NamespaceLifecycle admission sees them: every create
//! of a namespaced object checks that its namespace exists and is not
//! terminating. Reading and decoding the namespace from the store on every
//! create cost about 9% of the server's CPU in `keelson bench kube`'s
//! creates, so each member keeps the namespaces' phases in memory, fed by a
//! hub watch on `/registry/namespaces/` (kube-apiserver's admission plugin
//! reads an informer's cache the same way).
//!
//! Invariants:
//! - the cache is primed from one LIST at revision R and then follows the
//!   watch from R+1, so it is the store's state at some applied revision;
//! - a name missing from the cache is not taken as absent: the caller reads
//!   the store (a namespace created a moment ago may not have reached the
//!   cache yet);
//! - when the watch fails (cancelled, compacted, closed) the cache is
//!   switched off until primed again, and every lookup reads the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keelson_proto::etcdserverpb::WatchCreateRequest;
use keelson_proto::mvccpb::event::EventType;
use parking_lot::RwLock;
use serde_json::Value;

use super::handlers::KubeApi;
use super::storage::{self, ReadAt};
use crate::Backend;

/// A namespace's phase as the cache knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    Terminating,
}

impl Phase {
    fn of(object: &Value) -> Phase {
        if object["status"]["phase"] == "Terminating" { Phase::Terminating } else { Phase::Active }
    }
}

/// Namespace name → phase; `None` while not primed (lookups then miss).
#[derive(Default)]
pub struct NamespaceCache {
    names: RwLock<Option<HashMap<String, Phase>>>,
}

impl NamespaceCache {
    /// The namespace's phase if the cache knows the namespace exists.
    pub fn lookup(&self, name: &str) -> Option<Phase> {
        self.names.read().as_ref().and_then(|m| m.get(name).copied())
    }

    fn set(&self, names: Option<HashMap<String, Phase>>) {
        *self.names.write() = names;
    }

    fn apply(&self, name: String, phase: Option<Phase>) {
        if let Some(m) = self.names.write().as_mut() {
            match phase {
                Some(p) => m.insert(name, p),
                None => m.remove(&name),
            };
        }
    }
}

/// Primes the cache and keeps it current for as long as the member runs;
/// re-primes (after a pause) whenever the watch fails.
pub fn spawn<B: Backend>(api: Arc<KubeApi<B>>) {
    tokio::spawn(async move {
        let Some(rt) = api.registry.lookup("", "v1", "namespaces") else { return };
        let prefix = rt.prefix(None);
        let end = storage::prefix_end(prefix.as_bytes());
        loop {
            follow(&api, &prefix, &end).await;
            api.namespaces.set(None);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// One priming LIST and the watch after it; returns when the watch fails.
async fn follow<B: Backend>(api: &KubeApi<B>, prefix: &str, end: &[u8]) {
    let Ok(rev) = api.storage.resolve(ReadAt::Local).await else { return };
    let Ok(page) = api.storage.list(prefix.as_bytes(), end, rev, 0).await else { return };
    let names = page
        .items
        .iter()
        .filter_map(|s| Some((s.object["metadata"]["name"].as_str()?.to_string(), Phase::of(&s.object))))
        .collect();
    let (stream, mut rx) = api.storage.ctx.backend.hub().new_stream();
    let req = WatchCreateRequest {
        key: prefix.as_bytes().to_vec().into(),
        range_end: end.to_vec().into(),
        start_revision: rev + 1,
        ..Default::default()
    };
    if stream.watch(&req).is_err() {
        return;
    }
    api.namespaces.set(Some(names));
    while let Some(resp) = rx.recv().await {
        if resp.canceled || resp.compact_revision > 0 {
            return;
        }
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            let Some(name) = kv.key.strip_prefix(prefix.as_bytes()) else { continue };
            let name = String::from_utf8_lossy(name).into_owned();
            let phase = if ev.r#type == EventType::Delete as i32 {
                None
            } else {
                match serde_json::from_slice::<Value>(&kv.value) {
                    Ok(object) => Some(Phase::of(&object)),
                    // Not an object: leave the name to store reads.
                    Err(_) => None,
                }
            };
            api.namespaces.apply(name, phase);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprimed_cache_misses_and_primed_cache_follows_changes() {
        let c = NamespaceCache::default();
        c.apply("a".into(), Some(Phase::Active));
        assert_eq!(c.lookup("a"), None, "not primed: every lookup goes to the store");
        c.set(Some(HashMap::from([("a".to_string(), Phase::Active)])));
        assert_eq!(c.lookup("a"), Some(Phase::Active));
        c.apply("a".into(), Some(Phase::Terminating));
        assert_eq!(c.lookup("a"), Some(Phase::Terminating));
        c.apply("a".into(), None);
        assert_eq!(c.lookup("a"), None);
        c.set(None);
        assert_eq!(c.lookup("b"), None);
    }
}
