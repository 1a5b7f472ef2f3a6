//! The transaction workloads of etcd's `benchmark` tool: `txn-put` (a Txn of
//! `--txn-ops` puts, no compares) and `txn-mixed` (each Txn one get or one
//! put, `--rw-ratio` reads per write).

use std::sync::Arc;

use etcd_client::{GetOptions, Txn, TxnOp};
use futures::FutureExt;

use crate::kv::{self, KeySpace};
use crate::load::{self, LoadConfig, OpFn};

/// The transaction workloads' own flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TxnConfig {
    /// Puts per transaction in `txn-put` (`--txn-ops`).
    pub txn_ops: usize,
    /// Reads per write in `txn-mixed` (`--rw-ratio`).
    pub rw_ratio: f64,
}

/// `txn-put`: a Txn with `txn_ops` puts to keys of the key space.
pub fn put(cfg: &LoadConfig, txn: &TxnConfig, keys: Arc<KeySpace>) -> OpFn {
    let cfg = cfg.clone();
    let n = txn.txn_ops.max(1) as u64;
    let value = kv::value(cfg.val_size);
    Arc::new(move |client, i| {
        // Distinct keys within one Txn (etcd refuses duplicates).
        let first = load::key_index(&cfg, i);
        let space = cfg.key_space_size.max(1);
        let ops: Vec<TxnOp> = (0..n.min(space))
            .map(|j| {
                let k = (first + j) % space;
                keys.mark(k);
                TxnOp::put(load::key(k, cfg.key_size), value.clone(), None)
            })
            .collect();
        let mut kv = client.kv_client();
        async move { kv.txn(Txn::new().and_then(ops)).await.map(drop) }.boxed()
    })
}

/// `txn-mixed`: each Txn reads one key (linearizable) or, one time in
/// `rw_ratio + 1`, writes one.
pub fn mixed(cfg: &LoadConfig, txn: &TxnConfig, keys: Arc<KeySpace>) -> OpFn {
    let cfg = cfg.clone();
    let read_share = txn.rw_ratio.max(0.0) / (txn.rw_ratio.max(0.0) + 1.0);
    let value = kv::value(cfg.val_size);
    Arc::new(move |client, i| {
        let k = load::key_index(&cfg, i);
        let key = load::key(k, cfg.key_size);
        let op = if rand::random::<f64>() < read_share {
            TxnOp::get(key, None::<GetOptions>)
        } else {
            keys.mark(k);
            TxnOp::put(key, value.clone(), None)
        };
        let mut kv = client.kv_client();
        async move { kv.txn(Txn::new().and_then([op])).await.map(drop) }.boxed()
    })
}
