//! The single-key KV workloads of etcd's `benchmark` tool: `put` and
//! `range` (one key per request, linearizable or serializable), over a key
//! space whose written keys are tracked so reads can be made to hit.

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

/// `range`: a get of one key of the key space; `serializable` answers from
/// the member's local state (`--consistency s`), otherwise linearizable
/// (`--consistency l`).
pub fn range(cfg: &LoadConfig, serializable: bool) -> OpFn {
    let cfg = cfg.clone();
    Arc::new(move |mut client, i| {
        let key = load::key(load::key_index(&cfg, i), cfg.key_size);
        let opts = if serializable { GetOptions::new().with_serializable() } else { GetOptions::new() };
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
}
