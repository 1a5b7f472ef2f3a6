//! A fault-injecting TCP proxy in front of every member's peer port, for
//! packet delay and packet loss between chosen members.
//!
//! The kernel here has no `sch_netem` (`tc qdisc add … netem` answers
//! "Specified qdisc kind is unknown"), so the faults are made one level up:
//! the members run in network namespaces ([`ClusterOptions::isolated`])
//! and advertise their peer URLs on the host's end of the bridge
//! ([`ClusterOptions::peer_proxy`]), where this proxy listens and forwards
//! to the member's own peer URL. A member's peer traffic (Raft RPCs and
//! their answers, snapshots, forwarded requests) then all passes here, and
//! the proxy tells the sending member by the source address of the
//! connection. Clients still reach the members directly.
//!
//! Each direction of a connection is a queue of the chunks read from one
//! side, each written to the other side at its due time, in order (as TCP
//! delivers them whatever the network does to the packets):
//!
//! - [`LinkFault::Delay`]: every chunk from `a` to `b` is due `base ±
//!   jitter` after it was read (netem's `delay 200ms 50ms`);
//! - [`LinkFault::Loss`]: what packet loss does to a TCP stream — each
//!   chunk is lost with the given probability and retransmitted after an
//!   RTO of 200 ms, doubling on every further loss (so 30% loss stalls
//!   about 30% of chunks by 200 ms, 9% by 600 ms, 2.7% by 1.4 s, …), and
//!   everything behind a stalled chunk waits for it; a stall longer than
//!   the transport's keepalive timeout drops the connection, as it would.
//!
//! [`ClusterOptions::isolated`]: keelson_tests::ClusterOptions::isolated
//! [`ClusterOptions::peer_proxy`]: keelson_tests::ClusterOptions::peer_proxy

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use keelson_tests::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What happens to the bytes one member sends another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkFault {
    Delay {
        base: Duration,
        jitter: Duration,
    },
    /// Probability that a chunk is lost (and so retransmitted later).
    Loss {
        p: f64,
    },
}

/// The faults on the links, by (sender, receiver) member index.
#[derive(Default)]
pub struct Links {
    rules: Mutex<HashMap<(usize, usize), LinkFault>>,
    rng: Mutex<Option<StdRng>>,
    /// Chunks relayed, and those held back by a fault.
    chunks: AtomicU64,
    held: AtomicU64,
}

impl Links {
    pub fn set(&self, from: usize, to: usize, f: LinkFault) {
        self.rules.lock().unwrap().insert((from, to), f);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// (chunks relayed, chunks held back by a fault) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.chunks.load(Ordering::Relaxed), self.held.load(Ordering::Relaxed))
    }

    /// How long a chunk from `from` to `to` read now is held.
    fn hold(&self, from: usize, to: usize) -> Duration {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        let Some(f) = self.rules.lock().unwrap().get(&(from, to)).copied() else { return Duration::ZERO };
        let mut rng = self.rng.lock().unwrap();
        let rng = rng.get_or_insert_with(|| StdRng::seed_from_u64(0));
        let hold = match f {
            LinkFault::Delay { base, jitter } => {
                let j = jitter.as_secs_f64();
                Duration::from_secs_f64((base.as_secs_f64() + rng.random_range(-j..=j)).max(0.0))
            }
            LinkFault::Loss { p } => {
                let (mut hold, mut rto) = (Duration::ZERO, Duration::from_millis(200));
                for _ in 0..6 {
                    if !rng.random_bool(p) {
                        break;
                    }
                    hold += rto;
                    rto *= 2;
                }
                hold
            }
        };
        if !hold.is_zero() {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        hold
    }
}

/// The proxy: one listener per member, on the address the member
/// advertises; dropped with its runtime.
pub struct PeerProxy {
    pub links: Arc<Links>,
    _rt: tokio::runtime::Runtime,
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    hostport.parse().with_context(|| format!("peer url {url}"))
}

impl PeerProxy {
    /// Listens on the host of every member's advertised peer URL (set with
    /// `peer_proxy`), on a port of its own that then becomes the advertised
    /// one (no race for a free port), and forwards to the member's listen
    /// URL. Start it before the members.
    pub fn start(c: &mut Cluster, seed: u64) -> anyhow::Result<PeerProxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peer-proxy")
            .enable_all()
            .build()?;
        let links =
            Arc::new(Links { rng: Mutex::new(Some(StdRng::seed_from_u64(seed))), ..Default::default() });
        // Senders by the address their namespace connects from.
        let hosts: Arc<HashMap<IpAddr, usize>> = Arc::new(
            c.members.iter().enumerate().filter_map(|(i, m)| Some((m.host.parse().ok()?, i))).collect(),
        );
        for (to, m) in c.members.iter_mut().enumerate() {
            let advertised = m.peer_advertise.as_deref().context("the cluster has no peer_proxy")?;
            let listen = SocketAddr::new(addr_of(advertised)?.ip(), 0);
            let target = addr_of(&m.listen_peer_url())?;
            let l = rt.block_on(TcpListener::bind(listen)).with_context(|| format!("bind {listen}"))?;
            m.peer_advertise = Some(format!("http://{}", l.local_addr()?));
            let (links, hosts) = (links.clone(), hosts.clone());
            rt.spawn(async move {
                loop {
                    let Ok((conn, peer)) = l.accept().await else { continue };
                    let Some(&from) = hosts.get(&peer.ip()) else { continue };
                    let links = links.clone();
                    tokio::spawn(async move {
                        if let Ok(up) = TcpStream::connect(target).await {
                            relay(conn, up, from, to, links).await;
                        }
                    });
                }
            });
        }
        Ok(PeerProxy { links, _rt: rt })
    }
}

/// Both directions of one connection from member `a` to member `b`; ends
/// (closing both sockets) when either fails, or when both are closed.
async fn relay(down: TcpStream, up: TcpStream, a: usize, b: usize, links: Arc<Links>) {
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let ab = pump(dr, uw, a, b, links.clone());
    let ba = pump(ur, dw, b, a, links);
    tokio::pin!(ab, ba);
    tokio::select! {
        r = &mut ab => if r.is_ok() { let _ = ba.await; },
        r = &mut ba => if r.is_ok() { let _ = ab.await; },
    }
}

/// Copies `r` to `w`, each chunk held as the link `from → to` says, in
/// order. `Ok` at the end of the stream (`w` shut down after the last
/// chunk).
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    from: usize,
    to: usize,
    links: Arc<Links>,
) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let due = (Instant::now() + links.hold(from, to)).max(last);
            last = due;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            w.write_all(&chunk).await?;
        }
        w.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}
