//! One checker per watch guarantee (etcd `learning/api_guarantees.md`, and
//! the shape of etcd's `tests/robustness/validate/watch.go`), each over one
//! recorded watch and the committed history. Each returns the first
//! violation found, described.

use std::collections::HashSet;

use keelson_proto::mvccpb::{Event, event::EventType};
use keelson_watch::{WatchResponse, is_progress_notify};

use crate::fixture::{WatchRecord, in_range, state_at};

pub type Log = [(i64, Vec<Event>)];

fn rev_of(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

fn key_of(ev: &Event) -> &[u8] {
    ev.kv.as_ref().map_or(&[], |kv| &kv.key[..])
}

fn progress_rev(resp: &WatchResponse) -> Option<i64> {
    is_progress_notify(resp).then(|| resp.header.as_ref().map_or(0, |h| h.revision))
}

/// The request's key and range end after etcd's normalization of an empty key.
fn range(w: &WatchRecord) -> (Vec<u8>, Vec<u8>) {
    let key = if w.req.key.is_empty() { vec![0] } else { w.req.key.to_vec() };
    (key, w.req.range_end.to_vec())
}

/// Whether the watch should see `ev`: on its keys and through its filters.
fn matches(w: &WatchRecord, ev: &Event) -> bool {
    let (key, end) = range(w);
    if !in_range(&key, &end, key_of(ev)) {
        return false;
    }
    let filter = if ev.r#type == EventType::Put as i32 { 0 } else { 1 };
    !w.req.filters.contains(&filter)
}

/// Responses with fragments joined back into the responses the hub meant.
fn logical_responses(w: &WatchRecord) -> Vec<Vec<Event>> {
    let mut out = Vec::new();
    let mut cur: Vec<Event> = Vec::new();
    for resp in &w.responses {
        cur.extend(resp.events.iter().cloned());
        if !resp.fragment && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Ordered: event revisions never go backwards.
pub fn check_ordered(w: &WatchRecord) -> Result<(), String> {
    let mut last = 0;
    for ev in w.events() {
        if rev_of(&ev) < last {
            return Err(format!("ordered: watch {} got revision {} after {}", w.id, rev_of(&ev), last));
        }
        last = rev_of(&ev);
    }
    Ok(())
}

/// Unique: no (revision, key) event twice.
pub fn check_unique(w: &WatchRecord) -> Result<(), String> {
    let mut seen = HashSet::new();
    for ev in w.events() {
        if !seen.insert((rev_of(&ev), key_of(&ev).to_vec())) {
            return Err(format!(
                "unique: watch {} got revision {} key {:?} twice",
                w.id,
                rev_of(&ev),
                key_of(&ev)
            ));
        }
    }
    Ok(())
}

/// Atomic: a revision's events are never split across responses (fragments
/// joined back first), and a response holds every event of each revision it
/// carries that the watch should see.
pub fn check_atomic(w: &WatchRecord, log: &Log) -> Result<(), String> {
    let mut last_rev = 0;
    for resp in logical_responses(w) {
        let first = rev_of(&resp[0]);
        if first == last_rev {
            return Err(format!("atomic: watch {} got revision {first} split over two responses", w.id));
        }
        last_rev = rev_of(resp.last().unwrap());
        let mut revs: Vec<i64> = resp.iter().map(rev_of).collect();
        revs.dedup();
        for rev in revs {
            let want = log
                .iter()
                .find(|(r, _)| *r == rev)
                .map_or(0, |(_, evs)| evs.iter().filter(|e| matches(w, e)).count());
            let got = resp.iter().filter(|e| rev_of(e) == rev).count();
            if got != want {
                return Err(format!(
                    "atomic: watch {} got {got} of {want} events of revision {rev} in one response",
                    w.id
                ));
            }
        }
    }
    Ok(())
}

/// The first revision the watch promised to cover.
fn first_expected(w: &WatchRecord) -> i64 {
    if w.req.start_revision != 0 {
        return w.req.start_revision;
    }
    let created = w.responses.iter().find(|r| r.created).expect("a created response");
    created.header.as_ref().map_or(0, |h| h.revision) + 1
}

/// The last revision the watch is known to have covered: its last event or
/// the last progress notification.
fn last_covered(w: &WatchRecord) -> i64 {
    let mut last = 0;
    for resp in &w.responses {
        if let Some(p) = progress_rev(resp) {
            last = last.max(p);
        }
        if let Some(ev) = resp.events.last() {
            last = last.max(rev_of(ev));
        }
    }
    last
}

fn strip(ev: &Event) -> (i32, Option<keelson_proto::mvccpb::KeyValue>) {
    (ev.r#type, ev.kv.clone())
}

/// Reliable: from its first promised revision to the last covered one, the
/// watch got exactly the committed events it should see, none missing.
pub fn check_reliable(w: &WatchRecord, log: &Log) -> Result<(), String> {
    let (first, last) = (first_expected(w), last_covered(w));
    let want: Vec<_> = log
        .iter()
        .filter(|(rev, _)| (first..=last).contains(rev))
        .flat_map(|(_, evs)| evs.iter())
        .filter(|ev| matches(w, ev))
        .map(strip)
        .collect();
    let got: Vec<_> = w.events().iter().map(strip).collect();
    if want != got {
        let first_diff = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
        return Err(format!(
            "reliable: watch {} over [{first}, {last}] wanted {} events, got {}; first difference at {first_diff}: want {:?} got {:?}",
            w.id,
            want.len(),
            got.len(),
            want.get(first_diff),
            got.get(first_diff)
        ));
    }
    Ok(())
}

/// Resumable: a watch from a past revision starts with the first event at or
/// after it; a watch cancelled for compaction really needed a compacted
/// revision.
pub fn check_resumable(w: &WatchRecord, log: &Log) -> Result<(), String> {
    let events = w.events();
    if w.req.start_revision != 0
        && let Some(first) = events.first()
    {
        let want = log
            .iter()
            .filter(|(rev, _)| *rev >= w.req.start_revision)
            .flat_map(|(_, evs)| evs.iter())
            .find(|ev| matches(w, ev));
        if want.map(strip) != Some(strip(first)) {
            return Err(format!(
                "resumable: watch {} from {} began with revision {} instead of {:?}",
                w.id,
                w.req.start_revision,
                rev_of(first),
                want.map(rev_of)
            ));
        }
    }
    if let Some(compact) = w.compacted_at() {
        let next = events.last().map_or_else(|| first_expected(w), |ev| rev_of(ev) + 1);
        if next > compact {
            return Err(format!(
                "resumable: watch {} cancelled for compaction at {compact} though it needed only {next} onwards",
                w.id
            ));
        }
    }
    Ok(())
}

/// prev_kv: a watch that asked gets the key's value just before each event
/// (none for a create; may be missing only where that revision is
/// compacted); a watch that did not ask gets none.
pub fn check_prev_kv(w: &WatchRecord, log: &Log, compacted: i64) -> Result<(), String> {
    for ev in w.events() {
        let rev = rev_of(&ev);
        if !w.req.prev_kv {
            if ev.prev_kv.is_some() {
                return Err(format!("prev_kv: watch {} did not ask but got one at {rev}", w.id));
            }
            continue;
        }
        let want = state_at(log, key_of(&ev), rev - 1);
        let is_create =
            ev.r#type == EventType::Put as i32 && ev.kv.as_ref().is_some_and(|kv| kv.create_revision == rev);
        let ok = if is_create {
            ev.prev_kv.is_none() && want.is_none()
        } else {
            match &ev.prev_kv {
                Some(prev) => want.as_ref() == Some(prev),
                None => want.is_none() || rev - 1 < compacted,
            }
        };
        if !ok {
            return Err(format!("prev_kv: watch {} at {rev}: want {want:?}, got {:?}", w.id, ev.prev_kv));
        }
    }
    Ok(())
}

/// Bookmarkable: a progress notification's revision is at least every event
/// before it, and every event after it is newer.
pub fn check_bookmarkable(w: &WatchRecord) -> Result<(), String> {
    let (mut last_event, mut last_progress) = (0, 0);
    for resp in &w.responses {
        for ev in &resp.events {
            if rev_of(ev) <= last_progress {
                return Err(format!(
                    "bookmarkable: watch {} got revision {} after progress {last_progress}",
                    w.id,
                    rev_of(ev)
                ));
            }
            last_event = rev_of(ev);
        }
        if let Some(p) = progress_rev(resp) {
            if p < last_event || p < last_progress {
                return Err(format!(
                    "bookmarkable: watch {} progress {p} behind {last_event}/{last_progress}",
                    w.id
                ));
            }
            last_progress = p;
        }
    }
    Ok(())
}

/// Every checker on every watch.
pub fn check_all(watches: &[WatchRecord], log: &Log, compacted: i64) -> Result<(), String> {
    for w in watches {
        check_ordered(w)?;
        check_unique(w)?;
        check_atomic(w, log)?;
        check_reliable(w, log)?;
        check_resumable(w, log)?;
        check_prev_kv(w, log, compacted)?;
        check_bookmarkable(w)?;
    }
    Ok(())
}
