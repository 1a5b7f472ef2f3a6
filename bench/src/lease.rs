//! `lease-keepalive`, as etcd's `benchmark lease-keepalive`: every client
//! grants itself a lease (not measured), then sends keep-alives on its own
//! LeaseKeepAlive stream, one at a time; each keep-alive's round trip is
//! one operation. The leases are revoked afterwards.

use indicatif::ProgressBar;
use tokio::time::Instant;

use crate::load::{self, Conns, Outcome, Tickets};

/// TTL of the leases kept alive (long enough never to expire mid-phase).
const TTL_SECONDS: i64 = 60;

pub async fn keepalive(
    conns: &Conns,
    clients: usize,
    total: u64,
    rate: u64,
    progress: &ProgressBar,
) -> anyhow::Result<Outcome> {
    // Grant and open every stream before the clock starts.
    let mut streams = Vec::with_capacity(clients);
    for c in 0..clients.max(1) {
        let mut lease = conns.for_client(c).lease_client();
        let id = lease.grant(TTL_SECONDS, None).await?.id();
        let (keeper, stream) = lease.keep_alive(id).await?;
        streams.push((lease, id, keeper, stream));
    }
    let tickets = Tickets::new(total, rate);
    let mut tasks = tokio::task::JoinSet::new();
    for (mut lease, id, mut keeper, mut stream) in streams {
        let tickets = tickets.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut out = Outcome::empty();
            while tickets.take().await.is_some() {
                let t0 = Instant::now();
                let r = async {
                    keeper.keep_alive().await?;
                    match stream.message().await? {
                        Some(resp) if resp.ttl() > 0 => Ok(()),
                        Some(_) => Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into())),
                        None => Err(etcd_client::Error::LeaseKeepAliveError("stream ended".into())),
                    }
                }
                .await;
                match r {
                    Ok(()) => out.record(t0.elapsed()),
                    Err(e) => out.record_error(e),
                }
                out.elapsed = tickets.elapsed();
                progress.inc(1);
            }
            drop(keeper);
            let _ = lease.revoke(id).await;
            out
        });
    }
    load::join_all(tasks).await
}
