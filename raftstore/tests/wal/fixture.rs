//! Shared fixtures: building entries, opening stores, appending and waiting,
//! a minimal in-memory state machine for openraft's suite, and a frame walker
//! that finds records in a segment file by the documented framing
//! (`len: u32 LE | crc: u32 LE | body`).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use futures::StreamExt;
use keelson_raftstore::TypeConfig;
use keelson_raftstore::WalConfig;
use keelson_raftstore::WalLogStore;
use keelson_raftstore::types::Command;
use keelson_raftstore::types::CommandResult;
use keelson_raftstore::types::Entry;
use keelson_raftstore::types::EntryPayload;
use keelson_raftstore::types::LeaderId;
use keelson_raftstore::types::LogId;
use keelson_raftstore::types::Membership;
use keelson_raftstore::types::StoredMembership;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::SnapshotOf;
use openraft::storage::EntryResponder;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::type_config::TypeConfigExt;
use parking_lot::Mutex;

pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: 1 }, index)
}

/// A normal entry whose payload is `len` non-zero bytes derived from `index`.
pub fn entry(term: u64, index: u64, len: usize) -> Entry {
    let payload: Vec<u8> = (0..len).map(|i| 1 + ((index as usize * 31 + i) % 250) as u8).collect();
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Command(Bytes::from(payload))) }
}

pub fn membership_entry(term: u64, index: u64, voters: &[u64]) -> Entry {
    let m = Membership::new_with_defaults(vec![voters.iter().copied().collect::<BTreeSet<_>>()], []);
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(m) }
}

pub fn small_segments() -> WalConfig {
    WalConfig { segment_size: 4096, ..WalConfig::default() }
}

pub fn open(dir: &Path, config: WalConfig) -> WalLogStore {
    WalLogStore::open(dir, config).expect("open wal")
}

/// Appends through openraft's path and waits for the `IOFlushed` callback.
pub async fn append(store: &mut WalLogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.map_err(|_| io::Error::other("callback dropped"))?
}

pub async fn all_entries(store: &mut WalLogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.expect("read entries")
}

/// The segment files of a WAL directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// The byte ranges of the frames in a segment, up to the zero end marker.
pub fn frames(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() && bytes[at..at + 8].iter().any(|b| *b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push(at..at + 8 + len);
        at += 8 + len;
    }
    out
}

/// A minimal in-memory state machine: the fixture openraft's suite needs
/// beside the log store under test.
#[derive(Clone, Default)]
pub struct MemStateMachine {
    state: Arc<Mutex<SmState>>,
}

#[derive(Default)]
struct SmState {
    applied: Option<LogId>,
    membership: StoredMembership,
    commands: u64,
    snapshot: Option<(SnapshotMetaOf<TypeConfig>, Vec<u8>)>,
}

impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let mut s = self.state.lock();
        let meta =
            SnapshotMetaOf::<TypeConfig> { last_log_id: s.applied, last_membership: s.membership.clone() };
        let data = serde_json::to_vec(&(s.applied, &s.membership, s.commands)).map_err(io::Error::other)?;
        s.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MemStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let s = self.state.lock();
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut s = self.state.lock();
                s.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(_) => s.commands += 1,
                    EntryPayload::Membership(m) => {
                        s.membership = StoredMembership::new(Some(entry.log_id), m)
                    }
                }
            }
            if let Some(responder) = responder {
                responder.send(CommandResult::default());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let (applied, membership, commands): (Option<LogId>, StoredMembership, u64) =
            serde_json::from_slice(&snapshot).map_err(io::Error::other)?;
        let mut s = self.state.lock();
        s.applied = applied;
        s.membership = membership;
        s.commands = commands;
        s.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let s = self.state.lock();
        Ok(s.snapshot.as_ref().map(|(meta, data)| SnapshotOf::<TypeConfig, Vec<u8>> {
            meta: meta.clone(),
            snapshot: data.clone(),
        }))
    }
}
