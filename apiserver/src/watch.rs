//! The `etcdserverpb.Watch` service: one bidirectional gRPC stream is one
//! [`WatchStream`] of the hub. Create, cancel and progress requests are
//! forwarded to it; its responses go back with a full header.
//!
//! As etcd's `serverWatchStream`: a refused create is answered on the stream
//! (the hub does it), cancelling an unknown id answers nothing, an empty
//! request is ignored, and the client closing its sending side does not
//! end the stream: responses keep flowing until the call itself ends. When
//! the call ends (the response stream is dropped) the hub stream and every
//! watch on it go with it; nothing is spawned.
//!
//! A stream opened with the `hasleader` metadata fails with "etcdserver: no
//! leader" when the member loses its leader (see `leader_monitor.rs`).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use keelson_proto::etcdserverpb::watch_request::RequestUnion;
use keelson_proto::etcdserverpb::watch_server::Watch;
use keelson_proto::etcdserverpb::{WatchRequest, WatchResponse};
use keelson_watch::{WatchReceiver, WatchStream};
use tonic::{Request, Response, Status, Streaming};

use crate::backend::Backend;
use crate::context::Ctx;
use crate::errors::{EtcdError, is_decode_limit};
use crate::leader_monitor::LeaderMonitor;

pub struct WatchService<B> {
    ctx: Arc<Ctx<B>>,
}

impl<B: Backend> WatchService<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        WatchService { ctx }
    }
}

pub type WatchResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend> Watch for WatchService<B> {
    type WatchStream = WatchResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let leader = LeaderMonitor::for_request(request.metadata());
        let (stream, rx) = self.ctx.backend.hub().new_stream();
        let session = Session {
            ctx: self.ctx.clone(),
            stream,
            rx,
            inbound: Some(request.into_inner()),
            leader,
            done: false,
        };
        let out =
            futures::stream::unfold(session, |mut s| async move { s.next().await.map(|item| (item, s)) });
        Ok(Response::new(Box::pin(out)))
    }
}

/// One gRPC Watch call: everything it owns is dropped with it.
struct Session<B> {
    ctx: Arc<Ctx<B>>,
    stream: WatchStream,
    rx: WatchReceiver,
    /// `None` once the client closed its sending side.
    inbound: Option<Streaming<WatchRequest>>,
    leader: LeaderMonitor,
    done: bool,
}

impl<B: Backend> Session<B> {
    /// The next response to send; `None` ends the call.
    async fn next(&mut self) -> Option<Result<WatchResponse, Status>> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                resp = self.rx.recv() => {
                    let Some(mut resp) = resp else {
                        // The hub shut down: the member is stopping.
                        self.done = true;
                        return Some(Err(EtcdError::Stopped.into()));
                    };
                    let rev = resp.header.as_ref().map_or(0, |h| h.revision);
                    resp.header = Some(self.ctx.header_at(rev));
                    return Some(Ok(resp));
                }
                req = next_request(&mut self.inbound) => match req {
                    Some(Ok(req)) => self.handle(req),
                    Some(Err(status)) => {
                        self.done = true;
                        return Some(Err(if is_decode_limit(&status) {
                            EtcdError::RequestTooLarge.into()
                        } else {
                            status
                        }));
                    }
                    None => self.inbound = None,
                },
                () = self.leader.lost(&*self.ctx.backend) => {
                    self.done = true;
                    return Some(Err(EtcdError::NoLeader.into()));
                }
            }
        }
    }

    fn handle(&mut self, req: WatchRequest) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                // A refused create is already answered on the stream.
                if let Err(e) = self.stream.watch(&create) {
                    tracing::debug!(error = %e, "watch create refused");
                }
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                self.stream.cancel(cancel.watch_id);
            }
            Some(RequestUnion::ProgressRequest(_)) => self.stream.request_progress(),
            None => {}
        }
    }
}

async fn next_request(inbound: &mut Option<Streaming<WatchRequest>>) -> Option<Result<WatchRequest, Status>> {
    match inbound {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keelson_proto::etcdserverpb::{
        CompactionRequest, PutRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
        kv_client::KvClient,
    };
    use keelson_proto::mvccpb::event::EventType;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Code;
    use tonic::transport::Channel;

    use super::*;
    use crate::testing::{TestServer, key};

    fn create(k: &str, start_revision: i64) -> WatchRequest {
        WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key(k),
                start_revision,
                ..Default::default()
            })),
        }
    }

    async fn open(srv: &TestServer) -> (mpsc::Sender<WatchRequest>, Streaming<WatchResponse>) {
        let (tx, rx) = mpsc::channel(16);
        let resp = srv.watch_client().await.watch(ReceiverStream::new(rx)).await.unwrap();
        (tx, resp.into_inner())
    }

    async fn next(s: &mut Streaming<WatchResponse>) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("a response in time")
            .unwrap()
            .unwrap()
    }

    async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str) -> i64 {
        let r = kv.put(PutRequest { key: key(k), value: key(v), ..Default::default() }).await.unwrap();
        r.into_inner().header.unwrap().revision
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn create_events_cancel_and_progress() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        // An empty store is at revision 1: the first put makes 2.
        assert_eq!(put(&mut kv, "foo", "v1").await, 2);
        let (tx, mut rx) = open(&srv).await;

        tx.send(create("foo", 0)).await.unwrap();
        let created = next(&mut rx).await;
        assert!(created.created);
        srv.assert_header(created.header.as_ref(), 2);
        let id = created.watch_id;

        let rev = put(&mut kv, "foo", "v2").await;
        let ev = next(&mut rx).await;
        assert_eq!(ev.watch_id, id);
        assert_eq!(ev.events.len(), 1);
        assert_eq!(ev.events[0].kv.as_ref().unwrap().value, key("v2"));
        srv.assert_header(ev.header.as_ref(), rev);

        // A watch from the past replays history.
        tx.send(create("foo", 2)).await.unwrap();
        let created = next(&mut rx).await;
        assert!(created.created);
        let replay = next(&mut rx).await;
        assert_eq!(replay.watch_id, created.watch_id);
        let revs: Vec<i64> = replay.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
        assert_eq!(revs, vec![2, 3]);

        tx.send(WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) })
            .await
            .unwrap();
        let progress = next(&mut rx).await;
        assert!(keelson_watch::is_progress_notify(&progress));
        assert_eq!(progress.watch_id, -1);
        srv.assert_header(progress.header.as_ref(), 3);

        // Cancelling an unknown id answers nothing; a known one is canceled.
        for watch_id in [999, id] {
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
            })
            .await
            .unwrap();
        }
        let canceled = next(&mut rx).await;
        assert!(canceled.canceled);
        assert_eq!(canceled.watch_id, id);
        srv.assert_header(canceled.header.as_ref(), 3);

        // After a half-close the stream still delivers.
        drop(tx);
        put(&mut kv, "foo", "v3").await;
        let ev = next(&mut rx).await;
        assert_eq!(ev.events[0].r#type, EventType::Put as i32);
        assert_eq!(ev.events[0].kv.as_ref().unwrap().value, key("v3"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compacted_start_revision_cancels_the_watch() {
        let srv = TestServer::start().await;
        let mut kv = srv.kv_client().await;
        // Revisions 2 to 5; compact at the third put's.
        for i in 0..4 {
            put(&mut kv, "k", &i.to_string()).await;
        }
        kv.compact(CompactionRequest { revision: 4, physical: true }).await.unwrap();
        let (tx, mut rx) = open(&srv).await;
        tx.send(create("k", 3)).await.unwrap();
        let created = next(&mut rx).await;
        assert!(created.created);
        let cancel = next(&mut rx).await;
        assert!(cancel.canceled);
        assert_eq!(cancel.compact_revision, 4);
        assert_eq!(cancel.watch_id, created.watch_id);

        // A refused create: id -1, created and canceled, with etcd's reason.
        let bad = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key("b"),
                range_end: key("a"),
                ..Default::default()
            })),
        };
        tx.send(bad).await.unwrap();
        let refused = next(&mut rx).await;
        assert!(refused.created && refused.canceled);
        assert_eq!(refused.watch_id, -1);
        assert_eq!(refused.cancel_reason, "mvcc: watcher range is empty");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ending_the_call_drops_the_hub_stream() {
        let srv = TestServer::start().await;
        let (tx, mut rx) = open(&srv).await;
        tx.send(create("x", 0)).await.unwrap();
        next(&mut rx).await;
        assert_eq!(srv.backend.hub().stats().watchers, 1);
        drop(rx);
        drop(tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while srv.backend.hub().stats().streams > 0 {
            assert!(tokio::time::Instant::now() < deadline, "hub stream still open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(srv.backend.hub().stats().watchers, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hasleader_streams_fail_without_a_leader() {
        let srv = TestServer::start().await;
        let mut client = srv.watch_client().await;
        let (tx, rx) = mpsc::channel(4);
        let mut req = Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert("hasleader", "true".parse().unwrap());
        let mut stream = client.watch(req).await.unwrap().into_inner();
        tx.send(create("x", 0)).await.unwrap();
        assert!(next(&mut stream).await.created);
        srv.backend.set_leader(false);
        let err = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unavailable, "etcdserver: no leader"));

        // A new stream is refused at once.
        let (_tx2, rx2) = mpsc::channel::<WatchRequest>(4);
        let mut req = Request::new(ReceiverStream::new(rx2));
        req.metadata_mut().insert("hasleader", "true".parse().unwrap());
        let err = client.watch(req).await.unwrap_err();
        assert_eq!(err.message(), "etcdserver: no leader");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_etcd_client_crate_watches() {
        let srv = TestServer::start().await;
        let mut client = srv.etcd_client().await;
        let mut stream = client
            .watch("w/", Some(etcd_client::WatchOptions::new().with_prefix().with_prev_key()))
            .await
            .unwrap();
        client.put("w/a", "1", None).await.unwrap();
        client.put("w/a", "2", None).await.unwrap();
        let mut seen = Vec::new();
        let mut id = None;
        while seen.len() < 2 {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            id = Some(resp.watch_id());
            for ev in resp.events() {
                let kv = ev.kv().unwrap();
                seen.push((
                    kv.value_str().unwrap().to_owned(),
                    ev.prev_kv().map(|p| p.value_str().unwrap().to_owned()),
                ));
            }
        }
        assert_eq!(seen, vec![("1".to_owned(), None), ("2".to_owned(), Some("1".to_owned()))]);
        stream.cancel(id.unwrap()).await.unwrap();
    }
}
