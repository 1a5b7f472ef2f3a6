//! Test fixtures: an in-memory store that implements `EventSource`, a
//! harness that applies writes and notifies the hub like the apply path, and
//! a recorder of each stream's responses per watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keelson_proto::mvccpb::{Event, KeyValue, event::EventType};
use keelson_watch::{
    EventSource, HistoryError, INVALID_WATCH_ID, TryRecvError, WatchConfig, WatchCreateRequest, WatchHub,
    WatchReceiver, WatchResponse, WatchStream, is_progress_notify,
};
use parking_lot::Mutex;

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Bytes, Bytes),
    Delete(Bytes),
}

#[derive(Debug, Default)]
struct Inner {
    log: Vec<(i64, Vec<Event>)>,
    kv: BTreeMap<Bytes, KeyValue>,
    rev: i64,
    compacted: i64,
}

/// An MVCC store in memory: the full event log, the current key-values and
/// the compacted revision. `events` and `kv_at` refuse compacted revisions
/// like the real store.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

/// etcd range rules: empty end = single key, "\0" = all keys >= key.
pub fn in_range(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

impl MemStore {
    /// Applies the writes as one revision; `None` if they change nothing
    /// (only deletes of absent keys).
    pub fn txn(&self, ops: &[Op]) -> Option<(i64, Vec<Event>)> {
        let mut s = self.inner.lock();
        let rev = s.rev + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    let kv = match s.kv.get(key) {
                        Some(old) => KeyValue {
                            key: key.clone(),
                            create_revision: old.create_revision,
                            mod_revision: rev,
                            version: old.version + 1,
                            value: value.clone(),
                            lease: 0,
                        },
                        None => KeyValue {
                            key: key.clone(),
                            create_revision: rev,
                            mod_revision: rev,
                            version: 1,
                            value: value.clone(),
                            lease: 0,
                        },
                    };
                    s.kv.insert(key.clone(), kv.clone());
                    events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
                }
                Op::Delete(key) => {
                    if s.kv.remove(key).is_some() {
                        let kv = KeyValue { key: key.clone(), mod_revision: rev, ..Default::default() };
                        events.push(Event { r#type: EventType::Delete as i32, kv: Some(kv), prev_kv: None });
                    }
                }
            }
        }
        if events.is_empty() {
            return None;
        }
        s.rev = rev;
        s.log.push((rev, events.clone()));
        Some((rev, events))
    }

    pub fn compact(&self, rev: i64) {
        let mut s = self.inner.lock();
        s.compacted = s.compacted.max(rev.min(s.rev));
    }

    pub fn rev(&self) -> i64 {
        self.inner.lock().rev
    }

    pub fn compacted(&self) -> i64 {
        self.inner.lock().compacted
    }

    /// Every committed revision, compacted or not.
    pub fn log(&self) -> Vec<(i64, Vec<Event>)> {
        self.inner.lock().log.clone()
    }
}

impl EventSource for MemStore {
    fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        end_rev: i64,
    ) -> Result<Vec<Event>, HistoryError> {
        let s = self.inner.lock();
        if start_rev <= s.compacted {
            return Err(HistoryError::Compacted(s.compacted));
        }
        let from = s.log.partition_point(|(rev, _)| *rev < start_rev);
        Ok(s.log[from..]
            .iter()
            .take_while(|(rev, _)| *rev <= end_rev)
            .flat_map(|(_, evs)| evs.iter())
            .filter(|ev| in_range(key, range_end, &ev.kv.as_ref().unwrap().key))
            .cloned()
            .collect())
    }

    fn kv_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, HistoryError> {
        let s = self.inner.lock();
        if rev < s.compacted {
            return Err(HistoryError::Compacted(s.compacted));
        }
        Ok(state_at(&s.log, key, rev))
    }
}

/// The key's value as of `rev` in a log.
pub fn state_at(log: &[(i64, Vec<Event>)], key: &[u8], rev: i64) -> Option<KeyValue> {
    let upto = log.partition_point(|(r, _)| *r <= rev);
    for (_, evs) in log[..upto].iter().rev() {
        for ev in evs.iter().rev() {
            let kv = ev.kv.as_ref().unwrap();
            if kv.key == key {
                return (ev.r#type == EventType::Put as i32).then(|| kv.clone());
            }
        }
    }
    None
}

/// The store plus a hub fed like the apply path feeds it.
pub struct Harness {
    pub store: Arc<MemStore>,
    pub hub: WatchHub,
}

impl Harness {
    pub fn new(config: WatchConfig) -> Self {
        let store = Arc::new(MemStore::default());
        let hub = WatchHub::start(store.clone(), config, 0, 0).expect("start hub");
        Harness { store, hub }
    }

    pub fn txn(&self, ops: &[Op]) -> Option<i64> {
        let (rev, events) = self.store.txn(ops)?;
        self.hub.notify(rev, events);
        Some(rev)
    }

    pub fn put(&self, key: &str, value: &str) -> i64 {
        self.txn(&[Op::Put(Bytes::copy_from_slice(key.as_bytes()), Bytes::copy_from_slice(value.as_bytes()))])
            .expect("a put always writes")
    }

    pub fn delete(&self, key: &str) -> Option<i64> {
        self.txn(&[Op::Delete(Bytes::copy_from_slice(key.as_bytes()))])
    }

    pub fn compact(&self, rev: i64) {
        self.store.compact(rev);
        self.hub.compacted(rev);
    }

    /// Waits until the hub has fanned out everything written.
    pub fn settle(&self) {
        let want = self.store.rev();
        wait_until(|| self.hub.revision() >= want);
    }

    pub fn stream(&self) -> Recorder {
        let (stream, rx) = self.hub.new_stream();
        Recorder { stream, rx, watches: Vec::new(), open: HashMap::new(), progress_all: Vec::new() }
    }
}

pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One watch as a client saw it: its request and every response routed to
/// it (created, events, progress, cancel).
#[derive(Debug, Clone)]
pub struct WatchRecord {
    pub req: WatchCreateRequest,
    pub id: i64,
    pub responses: Vec<WatchResponse>,
    pub created: bool,
    pub closed: bool,
}

impl WatchRecord {
    pub fn events(&self) -> Vec<Event> {
        self.responses.iter().flat_map(|r| r.events.iter().cloned()).collect()
    }

    pub fn compacted_at(&self) -> Option<i64> {
        self.responses.iter().find(|r| r.compact_revision != 0).map(|r| r.compact_revision)
    }
}

/// A client stream that records what it reads.
pub struct Recorder {
    pub stream: WatchStream,
    pub rx: WatchReceiver,
    pub watches: Vec<WatchRecord>,
    open: HashMap<i64, usize>,
    /// Revisions of stream-wide progress notifications, in order.
    pub progress_all: Vec<i64>,
}

impl Recorder {
    pub fn watch(&mut self, req: WatchCreateRequest) -> Option<i64> {
        let id = self.stream.watch(&req).ok()?;
        self.open.insert(id, self.watches.len());
        self.watches.push(WatchRecord { req, id, responses: Vec::new(), created: false, closed: false });
        Some(id)
    }

    pub fn cancel(&mut self, id: i64) -> bool {
        self.stream.cancel(id)
    }

    fn route(&mut self, resp: WatchResponse) {
        if resp.watch_id == INVALID_WATCH_ID {
            if resp.created {
                return; // a refused create
            }
            // A progress notification (at revision 0 before any write,
            // which etcd's IsProgressNotify does not count).
            assert!(
                is_progress_notify(&resp)
                    || resp == WatchResponse { header: resp.header, watch_id: -1, ..Default::default() },
                "unexpected stream-wide response {resp:?}"
            );
            let rev = resp.header.as_ref().unwrap().revision;
            self.progress_all.push(rev);
            for w in self.watches.iter_mut().filter(|w| w.created && !w.closed) {
                w.responses.push(resp.clone());
            }
            return;
        }
        let idx =
            *self.open.get(&resp.watch_id).unwrap_or_else(|| panic!("response for unknown watch {resp:?}"));
        let w = &mut self.watches[idx];
        assert!(!w.closed, "response after cancel: {resp:?}");
        if resp.created {
            assert!(!w.created, "created twice");
            w.created = true;
        } else {
            assert!(w.created, "response before created: {resp:?}");
        }
        if resp.canceled {
            w.closed = true;
            self.open.remove(&resp.watch_id);
        }
        w.responses.push(resp);
    }

    /// Reads everything queued now; returns how many.
    pub fn drain(&mut self) -> usize {
        self.drain_at_most(usize::MAX)
    }

    pub fn drain_at_most(&mut self, n: usize) -> usize {
        let mut read = 0;
        while read < n {
            match self.rx.try_recv() {
                Ok(resp) => {
                    self.route(resp);
                    read += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        read
    }

    /// Asks for stream-wide progress and reads until it arrives with at least
    /// `rev`: afterwards every watch on the stream has everything up to `rev`.
    pub fn sync_to(&mut self, rev: i64) {
        loop {
            let seen = self.progress_all.len();
            self.stream.request_progress();
            wait_until(|| {
                self.drain();
                self.progress_all.len() > seen
            });
            if self.progress_all[seen..].iter().any(|&r| r >= rev) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub fn watch_req(key: &str, range_end: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        start_revision,
        ..Default::default()
    }
}
