//! The KV workloads of etcd's `benchmark` tool: `put` and `range`
//! (linearizable or serializable; one key of the key space per request, or
//! a fixed span with `--keys-only`, `--count-only` and `--limit`), over a
//! key space whose written keys are tracked so reads can be made to hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etcd_client::{GetOptions, PutOptions};
use futures::FutureExt;

use crate::load::{self, LoadConfig, OpFn};

/// Which keys of the key space hold a value on the cluster under test.
pub struct KeySpace {
    written: Vec<AtomicBool>,
}

impl KeySpace {
    pub fn new(size: u64) -> Arc<KeySpace> {
        Arc::new(KeySpace { written: (0..size.max(1)).map(|_| AtomicBool::new(false)).collect() })
    }

    pub fn mark(&self, i: u64) {
        if let Some(w) = self.written.get(i as usize) {
            w.store(true, Ordering::Relaxed);
        }
    }

    /// Indexes of the keys never written.
    pub fn missing(&self) -> Vec<u64> {
        (0..self.written.len() as u64)
            .filter(|&i| !self.written[i as usize].load(Ordering::Relaxed))
            .collect()
    }
}

/// `put`: one key of the key space (random, or in order with
/// `--sequential-keys`) set to a `--val-size` value.
pub fn put(cfg: &LoadConfig, keys: Arc<KeySpace>) -> OpFn {
    let cfg = cfg.clone();
    let value = value(cfg.val_size);
    Arc::new(move |mut client, i| {
        let k = load::key_index(&cfg, i);
        keys.mark(k);
        let key = load::key(k, cfg.key_size);
        let value = value.clone();
        async move { client.put(key, value, None::<PutOptions>).await.map(drop) }.boxed()
    })
}

/// Writes the listed key indexes (the fill before reads; not measured).
pub fn fill(cfg: &LoadConfig, indexes: Arc<Vec<u64>>, keys: Arc<KeySpace>) -> OpFn {
    let key_size = cfg.key_size;
    let value = value(cfg.val_size);
    Arc::new(move |mut client, i| {
        let k = indexes[i as usize];
        keys.mark(k);
        let key = load::key(k, key_size);
        let value = value.clone();
        async move { client.put(key, value, None::<PutOptions>).await.map(drop) }.boxed()
    })
}

/// What each Range of the `range-l` and `range-s` workloads asks for: etcd
/// `benchmark range`'s `key [end-range]` argument and its `--prefix`,
/// `--keys-only`, `--count-only` and `--limit` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RangeConfig {
    /// The span every request reads; None: one key of the key space per
    /// request (random, or in order with `--sequential-keys`).
    pub span: Option<Span>,
    /// Return keys without values (`--keys-only`).
    pub keys_only: bool,
    /// Return only the number of matching keys (`--count-only`).
    pub count_only: bool,
    /// At most this many keys per response, 0 for no limit (`--limit`).
    pub limit: i64,
}

/// A fixed span of keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    pub key: Vec<u8>,
    /// Exclusive end; None: the key alone (etcd's `range key`).
    pub end: Option<Vec<u8>>,
    /// Every key starting with `key` (etcd's `--prefix`).
    pub prefix: bool,
}

impl Span {
    /// The exclusive end of the span as the Range request carries it; empty
    /// for the key alone.
    pub fn range_end(&self) -> Vec<u8> {
        if self.prefix { prefix_end(&self.key) } else { self.end.clone().unwrap_or_default() }
    }

    /// Whether `k` lies in the span.
    pub fn contains(&self, k: &[u8]) -> bool {
        let end = self.range_end();
        if end.is_empty() {
            k == self.key.as_slice()
        } else if end == [0] {
            k >= self.key.as_slice()
        } else {
            k >= self.key.as_slice() && k < end.as_slice()
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// rule: drop trailing 0xff bytes and add one to the last; `[0]`, meaning
/// "to the end of the keyspace", when every byte is 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl RangeConfig {
    /// The options of every Range request.
    fn options(&self, serializable: bool) -> GetOptions {
        let mut o = GetOptions::new();
        if serializable {
            o = o.with_serializable();
        }
        if let Some(span) = &self.span {
            let end = span.range_end();
            if !end.is_empty() {
                o = o.with_range(end);
            }
        }
        if self.keys_only {
            o = o.with_keys_only();
        }
        if self.count_only {
            o = o.with_count_only();
        }
        if self.limit > 0 {
            o = o.with_limit(self.limit);
        }
        o
    }

    /// How many keys of the key space each request matches, when it reads
    /// a fixed span (the fill writes every key of the key space first).
    pub fn matching_keys(&self, cfg: &LoadConfig) -> Option<u64> {
        let span = self.span.as_ref()?;
        Some((0..cfg.key_space_size.max(1)).filter(|&i| span.contains(&load::key(i, cfg.key_size))).count()
            as u64)
    }

    /// One line saying what a range request reads and returns, unless it is
    /// the default (one whole key-value of the key space).
    pub fn describe(&self, cfg: &LoadConfig) -> Option<String> {
        if *self == RangeConfig::default() {
            return None;
        }
        let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        let mut out = match &self.span {
            None => "range: one key of the key space per request".to_string(),
            Some(s) if s.prefix => format!("range: every key with prefix {:?}", show(&s.key)),
            Some(s) => match &s.end {
                Some(end) => format!("range: keys in [{:?}, {:?})", show(&s.key), show(end)),
                None => format!("range: the key {:?}", show(&s.key)),
            },
        };
        if let Some(n) = self.matching_keys(cfg) {
            out.push_str(&format!(" ({n} of the {} keys written)", cfg.key_space_size));
        }
        if self.limit > 0 {
            out.push_str(&format!(", limit {}", self.limit));
        }
        if self.count_only {
            out.push_str(", count only");
        } else if self.keys_only {
            out.push_str(", keys only");
        }
        Some(out)
    }
}

/// `range`: a Range of one key of the key space, or of the fixed span of
/// `rc`; `serializable` answers from the member's local state
/// (`--consistency s`), otherwise linearizable (`--consistency l`).
pub fn range(cfg: &LoadConfig, rc: &RangeConfig, serializable: bool) -> OpFn {
    let cfg = cfg.clone();
    let opts = rc.options(serializable);
    let fixed = rc.span.as_ref().map(|s| s.key.clone());
    Arc::new(move |mut client, i| {
        let key = match &fixed {
            Some(k) => k.clone(),
            None => load::key(load::key_index(&cfg, i), cfg.key_size),
        };
        let opts = opts.clone();
        async move { client.get(key, Some(opts)).await.map(drop) }.boxed()
    })
}

/// A value of `size` bytes (printable, so etcdctl shows it sensibly).
pub fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_space_tracks_missing_keys() {
        let ks = KeySpace::new(5);
        ks.mark(1);
        ks.mark(3);
        ks.mark(99);
        assert_eq!(ks.missing(), vec![0, 2, 4]);
    }

    fn cfg(space: u64) -> LoadConfig {
        LoadConfig {
            clients: 1,
            conns: 1,
            total: 1,
            key_size: 8,
            val_size: 8,
            key_space_size: space,
            sequential_keys: false,
            rate: 0,
        }
    }

    fn span(key: &str, end: Option<&str>, prefix: bool) -> RangeConfig {
        RangeConfig {
            span: Some(Span { key: key.into(), end: end.map(Into::into), prefix }),
            ..RangeConfig::default()
        }
    }

    #[test]
    fn spans_match_the_keys_of_the_key_space_they_cover() {
        let c = cfg(10_000);
        assert_eq!(span("00000000", Some("00000100"), false).matching_keys(&c), Some(100));
        assert_eq!(span("0000", None, true).matching_keys(&c), Some(10_000));
        assert_eq!(span("0000001", None, true).matching_keys(&c), Some(10));
        assert_eq!(span("00000042", None, false).matching_keys(&c), Some(1));
        assert_eq!(span("x", None, false).matching_keys(&c), Some(0));
        assert_eq!(RangeConfig::default().matching_keys(&c), None);
    }

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        let all = Span { key: b"\xff".to_vec(), end: None, prefix: true };
        assert!(all.contains(b"\xff\x01") && !all.contains(b"a"));
    }

    #[test]
    fn descriptions_name_span_limit_and_shape() {
        let c = cfg(1_000);
        assert_eq!(RangeConfig::default().describe(&c), None);
        let mut rc = span("00000000", Some("00000100"), false);
        rc.limit = 10;
        rc.keys_only = true;
        assert_eq!(
            rc.describe(&c).unwrap(),
            r#"range: keys in ["00000000", "00000100") (100 of the 1000 keys written), limit 10, keys only"#
        );
        let rc = RangeConfig { count_only: true, ..RangeConfig::default() };
        assert_eq!(rc.describe(&c).unwrap(), "range: one key of the key space per request, count only");
    }
}
