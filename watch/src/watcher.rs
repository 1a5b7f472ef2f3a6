//! One watch: what it watches, where it has got to, and what it asked for.
//!
//! Kept small on purpose (64 bytes plus its shared key) because a member
//! holds hundreds of thousands of idle watchers; it owns no channel and no
//! task. Its stream's outbox carries its responses.

use std::sync::Arc;

use keelson_proto::mvccpb::{Event, event::EventType};

/// Where a watcher is in the hub's bookkeeping (etcd's synced / unsynced /
/// victim groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum WatcherState {
    /// Has every event below `min_rev` queued and `min_rev > ` the hub's
    /// revision: receives live events.
    Synced,
    /// Behind the hub: waits for the sync thread to catch it up.
    Unsynced,
    /// The sync thread is reading history for it outside the hub lock.
    Syncing,
    /// Its stream was full: waits, without cost, until the reader drains it.
    Parked,
}

/// Flags a watcher asked for, plus one piece of progress bookkeeping.
pub(crate) mod flags {
    /// Fill `prev_kv` on its events.
    pub const PREV_KV: u8 = 1;
    /// Send periodic progress notifications.
    pub const PROGRESS_NOTIFY: u8 = 1 << 1;
    /// Split responses larger than the max request size.
    pub const FRAGMENT: u8 = 1 << 2;
    /// Drop put events.
    pub const NO_PUT: u8 = 1 << 3;
    /// Drop delete events.
    pub const NO_DELETE: u8 = 1 << 4;
    /// Events were sent since the last progress tick (elides the next one).
    pub const SENT_SINCE_TICK: u8 = 1 << 5;
}

/// One watcher.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// First key watched; shared with the key index.
    pub key: Arc<[u8]>,
    /// `None`: the single key `key`. `Some(empty)`: every key `>= key`.
    /// `Some(end)`: `[key, end)`.
    pub end: Option<Arc<[u8]>>,
    /// The lowest revision the watcher still has to receive.
    pub min_rev: i64,
    /// The start revision the client asked for (0 = from now).
    pub start_rev: i64,
    /// The id the client sees.
    pub id: i64,
    /// Index of its stream in the hub.
    pub stream: u32,
    /// See [`flags`].
    pub flags: u8,
    pub state: WatcherState,
}

impl Watcher {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether `key` is inside what this watcher watches.
    pub fn matches(&self, key: &[u8]) -> bool {
        key_in(&self.key, self.end.as_deref(), key)
    }

    /// Whether the watcher's filters let `ev` through.
    pub fn wants(&self, ev: &Event) -> bool {
        if ev.r#type == EventType::Delete as i32 {
            !self.has(flags::NO_DELETE)
        } else {
            !self.has(flags::NO_PUT)
        }
    }

    /// `range_end` in etcd's wire form, for [`EventSource::events`](crate::EventSource::events).
    pub fn wire_end(&self) -> &[u8] {
        match &self.end {
            None => &[],
            Some(end) if end.is_empty() => b"\0",
            Some(end) => end,
        }
    }
}

/// Whether `key` is in `[start, end)` under the watcher encoding of `end`.
pub(crate) fn key_in(start: &[u8], end: Option<&[u8]>, key: &[u8]) -> bool {
    match end {
        None => key == start,
        Some(end) => key >= start && (end.is_empty() || key < end),
    }
}

/// etcd's `IsCreateEvent`: a put that created the key. Such events carry no
/// `prev_kv`.
pub(crate) fn is_create(ev: &Event) -> bool {
    ev.r#type == EventType::Put as i32
        && ev.kv.as_ref().is_some_and(|kv| kv.create_revision == kv.mod_revision)
}

/// The revision of an event.
pub(crate) fn event_rev(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// The key of an event.
pub(crate) fn event_key(ev: &Event) -> &[u8] {
    ev.kv.as_ref().map_or(&[], |kv| &kv.key[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_stays_small() {
        assert!(std::mem::size_of::<Option<Watcher>>() <= 64);
    }

    #[test]
    fn key_in_follows_etcd_range_rules() {
        assert!(key_in(b"a", None, b"a"));
        assert!(!key_in(b"a", None, b"ab"));
        assert!(key_in(b"a", Some(b""), b"zzz"));
        assert!(!key_in(b"b", Some(b""), b"a"));
        assert!(key_in(b"a", Some(b"c"), b"b"));
        assert!(!key_in(b"a", Some(b"c"), b"c"));
    }
}
