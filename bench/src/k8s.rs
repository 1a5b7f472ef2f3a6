//! `k8s`: a Kubernetes-shaped mix, as kube-apiserver drives its store.
//! Objects live under `/registry/pods/bench/`; informers keep prefix
//! watches on `/registry/pods/` open throughout. Each operation is one of:
//!
//! - 60 % an optimistic update (GuaranteedUpdate): get the object, then a
//!   Txn that puts the new version if `mod_revision` is unchanged, else gets
//!   the current one and retries (up to 5 times);
//! - 20 % a get of one object (a quorum read, as `resourceVersion=""`);
//! - 15 % churn: create an object with a Txn on `create_revision == 0`, then
//!   delete it;
//! - 5 % a paginated list of every pod, `--k8s-list-limit` per page,
//!   following `more` (kubectl and informers list in chunks).
//!
//! An operation's latency covers all of its requests.

use std::sync::Arc;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use futures::FutureExt;
use indicatif::ProgressBar;

use crate::load::{self, Conns, LoadConfig, OpFn, Outcome};

const PODS: &str = "/registry/pods/";
const PREFIX: &str = "/registry/pods/bench/";

/// The mix's own flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct K8sConfig {
    /// Operations per phase (`--k8s-total`).
    pub total: u64,
    /// Objects created before the phase (`--k8s-objects`).
    pub objects: u64,
    /// Bytes per object (`--k8s-object-size`): a small pod's JSON.
    pub object_size: usize,
    /// Page size of lists (`--k8s-list-limit`).
    pub list_limit: i64,
    /// Informer watches open during the phase (`--k8s-informers`).
    pub informers: usize,
}

fn pod_key(i: u64) -> Vec<u8> {
    format!("{PREFIX}pod-{i:06}").into_bytes()
}

/// Creates the objects (not measured).
pub async fn prepare(
    conns: &Conns,
    cfg: &LoadConfig,
    k: &K8sConfig,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    progress.set_length(k.objects);
    let value = crate::kv::value(k.object_size);
    let op: OpFn = Arc::new(move |mut client, i| {
        let value = value.clone();
        async move { client.put(pod_key(i), value, None::<PutOptions>).await.map(drop) }.boxed()
    });
    load::drive(conns, cfg.clients, k.objects, 0, progress, op).await
}

/// Runs the mix for `k.total` operations with informers watching.
pub async fn run(
    conns: &Conns,
    cfg: &LoadConfig,
    k: &K8sConfig,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    progress.set_length(k.total);
    let mut informers = tokio::task::JoinSet::new();
    for s in 0..k.informers {
        let mut ws = conns
            .for_client(s)
            .watch_client()
            .watch(PODS, Some(etcd_client::WatchOptions::new().with_prefix()))
            .await?;
        informers.spawn(async move { while let Ok(Some(_)) = ws.message().await {} });
    }
    let total = k.total;
    let k = Arc::new(k.clone());
    let op: OpFn = Arc::new(move |client, i| {
        let k = k.clone();
        async move {
            let r: f64 = rand::random();
            if r < 0.60 {
                update(client, pod_key(rand::random_range(0..k.objects.max(1))), k.object_size).await
            } else if r < 0.80 {
                let mut c = client;
                c.get(pod_key(rand::random_range(0..k.objects.max(1))), None).await.map(drop)
            } else if r < 0.95 {
                churn(client, i, k.object_size).await
            } else {
                list(client, k.list_limit).await
            }
        }
        .boxed()
    });
    let out = load::drive(conns, cfg.clients, total, cfg.rate, progress, op).await;
    informers.abort_all();
    out
}

/// GuaranteedUpdate: read, then compare-and-swap on `mod_revision`, retrying
/// from the value the failed Txn returned.
async fn update(mut client: Client, key: Vec<u8>, size: usize) -> Result<(), etcd_client::Error> {
    let resp = client.get(key.clone(), None).await?;
    let mut rev = resp.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0);
    let value = crate::kv::value(size);
    for _ in 0..5 {
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None::<GetOptions>)]);
        let resp = client.txn(txn).await?;
        if resp.succeeded() {
            return Ok(());
        }
        rev = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
                _ => None,
            })
            .unwrap_or(0);
    }
    Err(etcd_client::Error::InvalidArgs("update conflicted 5 times".into()))
}

/// A short-lived object: create (only if absent), then delete.
async fn churn(mut client: Client, i: u64, size: usize) -> Result<(), etcd_client::Error> {
    let key = format!("{PREFIX}churn-{i:08}").into_bytes();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), crate::kv::value(size), None)]);
    client.txn(txn).await?;
    client.delete(key, None::<DeleteOptions>).await.map(drop)
}

/// Lists every pod in pages of `limit`, following `more`.
async fn list(mut client: Client, limit: i64) -> Result<(), etcd_client::Error> {
    let end = prefix_end(PODS.as_bytes());
    let mut start = PODS.as_bytes().to_vec();
    loop {
        let resp = client
            .get(start.clone(), Some(GetOptions::new().with_range(end.clone()).with_limit(limit)))
            .await?;
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// The first key after every key starting with `prefix`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
