//! [`Lessor`]: leases, as etcd's lessor keeps them.
//!
//! Grants and revokes are raft entries, applied on every member (the state
//! machine calls [`Lessor::grant`] / [`Lessor::revoke`] and persists the
//! lease beside the data). Expiry is the leader's business: only a primary
//! lessor (the leader's) runs countdowns; an expired lease is revoked
//! through the log, so its keys are deleted in one revision everywhere.
//! Keepalives renew the countdown on the leader without touching the log.
//! When a member becomes leader every countdown restarts at its full TTL plus
//! `extend` (the election timeout), so no lease expires because of an
//! election — the same rule etcd applies on promotion.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keelson_proto::mvccpb::{Event, event::EventType};
use parking_lot::Mutex;

/// The largest TTL a lease may have, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug)]
struct Lease {
    /// Granted TTL in seconds.
    ttl: i64,
    /// When the countdown ends; `None` while this lessor is not primary.
    expiry: Option<Instant>,
    keys: BTreeSet<Bytes>,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<i64, Lease>,
    /// Which lease each attached key belongs to.
    key_lease: HashMap<Bytes, i64>,
    primary: bool,
    /// Leases whose revoke has been proposed, and when.
    revoking: HashMap<i64, Instant>,
}

/// A lease as LeaseTimeToLive reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl: i64,
    /// Seconds left; on a non-primary lessor, the granted TTL.
    pub remaining_ttl: i64,
    pub keys: Vec<Bytes>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Lessor {
    state: Mutex<State>,
    /// The shortest TTL a lease gets (etcd: 1.5 election timeouts, in whole
    /// seconds, rounded up).
    min_ttl: i64,
}

impl Lessor {
    pub fn new(min_ttl: i64) -> Self {
        Lessor { state: Mutex::new(State::default()), min_ttl: min_ttl.max(1) }
    }

    /// The TTL a grant of `ttl` seconds gets.
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.min_ttl)
    }

    pub fn exists(&self, id: i64) -> bool {
        self.state.lock().leases.contains_key(&id)
    }

    /// Applies a grant (already checked: the id is new and the TTL valid).
    pub fn grant(&self, id: i64, ttl: i64) {
        let mut st = self.state.lock();
        let expiry = st.primary.then(|| Instant::now() + secs(ttl));
        st.leases.insert(id, Lease { ttl, expiry, keys: BTreeSet::new() });
    }

    /// Applies a revoke: forgets the lease; returns the keys attached to it
    /// (the caller deletes them in the same revision).
    pub fn revoke(&self, id: i64) -> Option<Vec<Bytes>> {
        let mut st = self.state.lock();
        st.revoking.remove(&id);
        let lease = st.leases.remove(&id)?;
        for k in &lease.keys {
            st.key_lease.remove(k);
        }
        Some(lease.keys.into_iter().collect())
    }

    /// Follows committed events: a put attaches its key to its lease (and
    /// detaches it from the previous one), a delete detaches it.
    pub fn on_events(&self, events: &[Event]) {
        let mut st = self.state.lock();
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            let new_lease = if ev.r#type == EventType::Put as i32 { kv.lease } else { 0 };
            let old = if new_lease != 0 {
                st.key_lease.insert(kv.key.clone(), new_lease)
            } else {
                st.key_lease.remove(&kv.key)
            };
            if let Some(old) = old
                && old != new_lease
                && let Some(l) = st.leases.get_mut(&old)
            {
                l.keys.remove(&kv.key);
            }
            if new_lease != 0
                && let Some(l) = st.leases.get_mut(&new_lease)
            {
                l.keys.insert(kv.key.clone());
            }
        }
    }

    /// Renews a lease's countdown (leader only); returns its TTL.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let mut st = self.state.lock();
        let primary = st.primary;
        let lease = st.leases.get_mut(&id)?;
        if primary {
            // A lease already past its expiry stays expired: its revoke is
            // on the way (etcd answers TTL 0 then).
            if lease.expiry.is_some_and(|e| e <= Instant::now()) {
                return Some(0);
            }
            lease.expiry = Some(Instant::now() + secs(lease.ttl));
        }
        Some(lease.ttl)
    }

    pub fn info(&self, id: i64, with_keys: bool) -> Option<LeaseInfo> {
        let st = self.state.lock();
        let lease = st.leases.get(&id)?;
        let remaining = match lease.expiry {
            Some(e) => {
                let left = e.saturating_duration_since(Instant::now());
                // Whole seconds, rounded up, as etcd reports them.
                (left.as_millis().div_ceil(1000)) as i64
            }
            None => lease.ttl,
        };
        Some(LeaseInfo {
            id,
            granted_ttl: lease.ttl,
            remaining_ttl: remaining,
            keys: if with_keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.state.lock().leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Becomes the primary lessor: every countdown restarts at its TTL plus
    /// `extend`.
    pub fn promote(&self, extend: Duration) {
        let mut st = self.state.lock();
        st.primary = true;
        st.revoking.clear();
        let now = Instant::now();
        for l in st.leases.values_mut() {
            l.expiry = Some(now + secs(l.ttl) + extend);
        }
    }

    /// Stops being primary: no countdowns run.
    pub fn demote(&self) {
        let mut st = self.state.lock();
        st.primary = false;
        st.revoking.clear();
        for l in st.leases.values_mut() {
            l.expiry = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.state.lock().primary
    }

    /// Expired leases whose revoke is not already in flight (or was
    /// proposed more than `retry` ago); marks them in flight.
    pub fn take_expired(&self, retry: Duration, max: usize) -> Vec<i64> {
        let mut st = self.state.lock();
        if !st.primary {
            return Vec::new();
        }
        let now = Instant::now();
        let expired: Vec<i64> = st
            .leases
            .iter()
            .filter(|(_, l)| l.expiry.is_some_and(|e| e <= now))
            .map(|(id, _)| *id)
            .filter(|id| st.revoking.get(id).is_none_or(|t| now.duration_since(*t) > retry))
            .take(max)
            .collect();
        for id in &expired {
            st.revoking.insert(*id, now);
        }
        expired
    }

    /// Forgets everything (before loading a snapshot).
    pub fn clear(&self) {
        let mut st = self.state.lock();
        st.leases.clear();
        st.key_lease.clear();
        st.revoking.clear();
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.clamp(0, MAX_LEASE_TTL) as u64)
}

#[cfg(test)]
mod tests {
    use keelson_proto::mvccpb::KeyValue;

    use super::*;

    fn put(key: &str, lease: i64) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue { key: Bytes::from(key.to_string()), lease, ..Default::default() }),
            prev_kv: None,
        }
    }

    #[test]
    fn keys_follow_puts_and_deletes() {
        let l = Lessor::new(2);
        l.grant(1, 10);
        l.grant(2, 10);
        l.on_events(&[put("a", 1), put("b", 1), put("c", 2)]);
        l.on_events(&[put("b", 2)]);
        let del = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue { key: Bytes::from_static(b"c"), ..Default::default() }),
            prev_kv: None,
        };
        l.on_events(&[del]);
        assert_eq!(l.info(1, true).unwrap().keys, vec![Bytes::from_static(b"a")]);
        assert_eq!(l.info(2, true).unwrap().keys, vec![Bytes::from_static(b"b")]);
        assert_eq!(l.revoke(1).unwrap(), vec![Bytes::from_static(b"a")]);
        assert!(l.revoke(1).is_none());
    }

    #[test]
    fn only_a_primary_expires_leases() {
        let l = Lessor::new(1);
        l.grant(1, 1);
        assert!(l.take_expired(Duration::from_secs(1), 10).is_empty());
        l.promote(Duration::ZERO);
        assert_eq!(l.info(1, false).unwrap().remaining_ttl, 1);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(l.take_expired(Duration::from_secs(60), 10), vec![1]);
        // In flight: not handed out twice.
        assert!(l.take_expired(Duration::from_secs(60), 10).is_empty());
        assert_eq!(l.keep_alive(1), Some(0));
        l.demote();
        assert!(l.take_expired(Duration::from_secs(60), 10).is_empty());
        assert_eq!(l.effective_ttl(0), 1);
    }
}
