//! [`GrpcNetwork`]: openraft's network factory over tonic: one long-lived
//! HTTP/2 channel per peer, shared by every RPC to it.

use std::collections::HashMap;
use std::sync::Arc;

use keelson_proto::keelsonraftpeerpb::Route;
use openraft::network::RaftNetworkFactory;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::config::TransportConfig;
use super::peer::GrpcPeer;
use crate::types::{Member, NodeId, TypeConfig};

/// Creates the clients openraft sends raft RPCs with. Cheap to clone; clones
/// share the channels.
///
/// The channel to a peer is created the first time openraft asks for a
/// client to it, from the first of the member's peer URLs, and connects
/// lazily: it (re)connects on use, so a peer that is down is simply
/// unreachable until it is back. Every client to that peer (replication,
/// heartbeats, snapshots, votes) multiplexes over it. A member whose peer
/// URL changes gets a new channel.
#[derive(Clone)]
pub struct GrpcNetwork {
    cluster_id: u64,
    member_id: NodeId,
    config: Arc<TransportConfig>,
    channels: Arc<Mutex<HashMap<NodeId, PeerChannel>>>,
    /// Set when a peer says this member was removed from the cluster.
    removed: Arc<tokio::sync::watch::Sender<bool>>,
}

#[derive(Clone)]
struct PeerChannel {
    url: String,
    channel: Channel,
}

impl std::fmt::Debug for GrpcNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNetwork")
            .field("cluster_id", &format_args!("{:016x}", self.cluster_id))
            .field("member_id", &format_args!("{:x}", self.member_id))
            .field("peers", &self.channels.lock().len())
            .finish()
    }
}

impl GrpcNetwork {
    /// The network of member `member_id` of cluster `cluster_id`; both go
    /// into every request, so peers can refuse a member of another cluster.
    pub fn new(cluster_id: u64, member_id: NodeId, config: TransportConfig) -> Self {
        GrpcNetwork {
            cluster_id,
            member_id,
            config: Arc::new(config),
            channels: Arc::default(),
            removed: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Becomes `true` once a peer answers that this member was removed.
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// The channel to `target` at `url`: the existing one, or a new lazily
    /// connecting one.
    pub(crate) fn channel(&self, target: NodeId, url: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(&target)
            && c.url == url
        {
            return Ok(c.channel.clone());
        }
        if url.starts_with("https://") {
            return Err(format!("peer URL {url}: TLS between members is not supported yet"));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("peer URL {url:?}: {e}"))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.config.keepalive_interval)
            .keep_alive_timeout(self.config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(self.config.stream_window_bytes)
            .initial_connection_window_size(self.config.connection_window_bytes);
        let channel = endpoint.connect_lazy();
        tracing::debug!(target_member = format_args!("{target:x}"), url, "new peer channel");
        channels.insert(target, PeerChannel { url: url.to_string(), channel: channel.clone() });
        Ok(channel)
    }

    /// Drops the channel to `target` (a removed member).
    pub fn forget(&self, target: NodeId) {
        self.channels.lock().remove(&target);
    }

    pub(crate) fn route(&self, target: NodeId) -> Route {
        Route { cluster_id: self.cluster_id, from: self.member_id, to: target }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> GrpcPeer {
        let channel = match node.peer_urls.first() {
            Some(url) => self.channel(target, url),
            None => Err(format!("member {target:x} ({:?}) has no peer URL", node.name)),
        };
        if let Err(why) = &channel {
            tracing::warn!(target_member = format_args!("{target:x}"), "{why}");
        }
        GrpcPeer::new(self.route(target), channel, self.config.clone(), self.removed.clone())
    }
}
