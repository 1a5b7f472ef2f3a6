//! Splitting a response too large for one gRPC message, as etcd's
//! `sendFragments` does: events go into fragments in order, each fragment
//! stays under the limit unless it holds a single event, and every fragment
//! but the last has `fragment` set. The client joins them back.

use keelson_proto::etcdserverpb::WatchResponse;
use prost::Message;

/// Field number of `WatchResponse.events`.
const EVENTS_TAG: u32 = 11;

/// `resp` as one response if it fits in `max_bytes` (or holds fewer than two
/// events), else as fragments.
pub(crate) fn split(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < max_bytes {
        return vec![resp];
    }
    let WatchResponse {
        header, watch_id, created, canceled, compact_revision, cancel_reason, events, ..
    } = resp;
    let shell = WatchResponse {
        header,
        watch_id,
        created,
        canceled,
        compact_revision,
        cancel_reason,
        fragment: true,
        events: Vec::new(),
    };
    let shell_len = shell.encoded_len();
    let mut out = Vec::new();
    let mut cur = shell.clone();
    let mut cur_len = shell_len;
    for ev in events {
        let ev_len = prost::encoding::message::encoded_len(EVENTS_TAG, &ev);
        if !cur.events.is_empty() && cur_len + ev_len >= max_bytes {
            out.push(std::mem::replace(&mut cur, shell.clone()));
            cur_len = shell_len;
        }
        cur_len += ev_len;
        cur.events.push(ev);
    }
    cur.fragment = false;
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keelson_proto::mvccpb::{Event, KeyValue};

    fn ev(i: i64, size: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from(format!("k{i}")),
                create_revision: 5,
                mod_revision: 5,
                version: 1,
                value: Bytes::from(vec![b'x'; size]),
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn small_responses_stay_whole() {
        let resp = crate::response::events(5, 1, vec![ev(1, 10), ev(2, 10)]);
        let out = split(resp.clone(), 1000);
        assert_eq!(out, vec![resp]);
    }

    #[test]
    fn large_responses_split_in_order_under_the_limit() {
        let events: Vec<Event> = (0..10).map(|i| ev(i, 300)).collect();
        let resp = crate::response::events(5, 1, events.clone());
        let out = split(resp, 1000);
        assert!(out.len() > 1);
        for (i, frag) in out.iter().enumerate() {
            assert_eq!(frag.fragment, i + 1 < out.len());
            assert!(frag.encoded_len() < 1000 || frag.events.len() == 1);
            assert_eq!(frag.header.as_ref().map(|h| h.revision), Some(5));
        }
        let joined: Vec<Event> = out.into_iter().flat_map(|f| f.events).collect();
        assert_eq!(joined, events);
    }

    #[test]
    fn a_single_oversized_event_is_sent_alone() {
        let events = vec![ev(0, 5000), ev(1, 10), ev(2, 5000)];
        let out = split(crate::response::events(5, 1, events), 1000);
        assert_eq!(out.iter().map(|f| f.events.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
    }
}
