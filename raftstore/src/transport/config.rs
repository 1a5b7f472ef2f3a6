//! [`TransportConfig`]: the peer transport's settings, shared by the client
//! side ([`super::GrpcNetwork`]) and the server side ([`super::peer_routes`]).

use std::time::Duration;

/// Settings of the peer transport. Per-RPC timeouts come from openraft's
/// `RPCOption` (that is, from the heartbeat interval and election timeout);
/// these are the rest.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// How long establishing the TCP connection to a peer may take.
    pub connect_timeout: Duration,
    /// HTTP/2 keepalive pings on an idle peer connection: a peer that
    /// stops answering them within `keepalive_timeout` is disconnected.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// The least time opening an append stream may take, and a streamed
    /// append may wait for the next answer while requests are outstanding
    /// (openraft's soft TTL for them is 3/4 of a heartbeat interval, shorter
    /// than a follower's fsync under load).
    pub min_stream_progress: Duration,
    /// The size of the pieces a snapshot file is streamed in.
    pub snapshot_chunk_size: usize,
    /// The least time the receiver may take to accept the next snapshot
    /// piece (openraft's `install_snapshot_timeout` gives the soft TTL; a
    /// snapshot stalled this long is abandoned and retried).
    pub min_snapshot_chunk_timeout: Duration,
    /// How long the receiver may take to install a snapshot once it has all
    /// of it (unpack, open, swap the store).
    pub snapshot_install_timeout: Duration,
    /// The largest message either side decodes: an AppendEntries request
    /// holds up to openraft's `max_payload_entries` entries.
    pub max_message_bytes: usize,
    /// HTTP/2 flow-control windows the peer server advertises: how much an
    /// append stream or a snapshot may have in flight.
    pub stream_window_bytes: u32,
    pub connection_window_bytes: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
            min_stream_progress: Duration::from_secs(1),
            snapshot_chunk_size: 1024 * 1024,
            min_snapshot_chunk_timeout: Duration::from_secs(5),
            snapshot_install_timeout: Duration::from_secs(600),
            max_message_bytes: 512 * 1024 * 1024,
            stream_window_bytes: 4 * 1024 * 1024,
            connection_window_bytes: 16 * 1024 * 1024,
        }
    }
}

impl TransportConfig {
    /// A tonic server set up to serve [`super::peer_routes`]: no Nagle
    /// delay, keepalive pings, and flow-control windows wide enough to keep
    /// appends and snapshot pieces flowing.
    pub fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .initial_stream_window_size(self.stream_window_bytes)
            .initial_connection_window_size(self.connection_window_bytes)
    }
}
