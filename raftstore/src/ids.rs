//! Member and cluster ids, derived as etcd derives them so the same
//! `--initial-cluster` and `--initial-cluster-token` give the same ids:
//! a member id is the first 8 bytes (big-endian) of SHA-1 over its sorted
//! peer URLs joined, then the token; the cluster id is the same over the
//! sorted member ids.

use sha1::{Digest, Sha1};

pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    member_id_hash(peer_urls, token, None)
}

/// The id of a member added at `unix_secs` (etcd's `NewMember` with a
/// time): the same hash with the time's decimal digits appended, so a member
/// added again with the same URLs gets a new id.
pub fn member_id_at(peer_urls: &[String], token: &str, unix_secs: u64) -> u64 {
    member_id_hash(peer_urls, token, Some(unix_secs))
}

fn member_id_hash(peer_urls: &[String], token: &str, unix_secs: Option<u64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.concat().as_bytes());
    h.update(token.as_bytes());
    if let Some(t) = unix_secs {
        h.update(t.to_string().as_bytes());
    }
    first_u64(&h.finalize())
}

pub fn cluster_id(members: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = members.into_iter().collect();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first_u64(&h.finalize())
}

/// The ids of the members of an `--initial-cluster` list, with their names.
pub fn members_of<'a>(initial: &'a [(String, Vec<String>)], token: &str) -> Vec<(u64, &'a str)> {
    initial.iter().map(|(name, urls)| (member_id(urls, token), name.as_str())).collect()
}

fn first_u64(digest: &[u8]) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("sha1 is 20 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_order_free() {
        let a = member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster");
        assert_eq!(a, member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster"));
        assert_ne!(a, member_id(&["http://127.0.0.1:2380".into()], "other"));
        let two = ["http://b:1".to_string(), "http://a:1".to_string()];
        let mut rev = two.clone();
        rev.reverse();
        assert_eq!(member_id(&two, "t"), member_id(&rev, "t"));
        assert_eq!(cluster_id([1, 2, 3]), cluster_id([3, 1, 2]));
        let added = member_id_at(&["http://127.0.0.1:2380".into()], "etcd-cluster", 1_700_000_000);
        assert_ne!(added, a);
        assert_ne!(added, member_id_at(&["http://127.0.0.1:2380".into()], "etcd-cluster", 1_700_000_001));
    }
}
