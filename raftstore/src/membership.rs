//! Membership changes, as etcd's Cluster service makes them, on openraft's
//! joint consensus. Only the leader changes the membership; other members
//! forward the change to it (`forward.rs`).
//!
//! - MemberAdd: a new id from the peer URLs, the cluster token and the time
//!   (as etcd derives it), never one in use; as a learner
//!   (`Raft::add_learner`, not waiting for it to catch up: it is not started
//!   yet) or as a voter (`ChangeMembers::AddVoters`, joint consensus).
//! - MemberPromote: only a learner whose log is within 10 % of the leader's
//!   (etcd's "in sync"), else "can only promote a learner member which is
//!   in sync with leader".
//! - MemberRemove: a voter leaves the voter set and the node set; a learner
//!   leaves the node set.
//! - MemberUpdate: new peer URLs (`ChangeMembers::SetNodes`). A member also
//!   uses it to publish its name and client URLs once it runs (etcd's
//!   `publish`), since the `--initial-cluster` entry every member starts
//!   with must be identical and so cannot carry them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keelson_proto::keelsonraftpeerpb as pb;
use openraft::ChangeMembers;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};

use crate::ids;
use crate::node::{Node, ProposeError};
use crate::types::Member;

/// etcd's `maxLearners`.
const MAX_LEARNERS: usize = 1;
/// etcd's `readyPercentThreshold`: a learner is in sync when its log is at
/// least this share of the leader's.
const READY_SHARE: f64 = 0.9;

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add {
        peer_urls: Vec<String>,
        is_learner: bool,
        name: String,
    },
    Remove(u64),
    Promote(u64),
    /// Empty fields are left as they are.
    Update {
        id: u64,
        peer_urls: Vec<String>,
        name: String,
        client_urls: Vec<String>,
    },
}

impl MemberChange {
    pub(crate) fn from_wire(change: Option<pb::change_members_request::Change>) -> Option<MemberChange> {
        use pb::change_members_request::Change;
        Some(match change? {
            Change::Add(a) => {
                MemberChange::Add { peer_urls: a.peer_urls, is_learner: a.is_learner, name: a.name }
            }
            Change::Remove(id) => MemberChange::Remove(id),
            Change::Promote(id) => MemberChange::Promote(id),
            Change::Update(u) => MemberChange::Update {
                id: u.id,
                peer_urls: u.peer_urls,
                name: u.name,
                client_urls: u.client_urls,
            },
        })
    }

    pub(crate) fn to_wire(&self) -> pb::change_members_request::Change {
        use pb::change_members_request::Change;
        match self.clone() {
            MemberChange::Add { peer_urls, is_learner, name } => {
                Change::Add(pb::AddMember { peer_urls, is_learner, name })
            }
            MemberChange::Remove(id) => Change::Remove(id),
            MemberChange::Promote(id) => Change::Promote(id),
            MemberChange::Update { id, peer_urls, name, client_urls } => {
                Change::Update(pb::UpdateMember { id, peer_urls, name, client_urls })
            }
        }
    }
}

fn write_error(
    e: RaftError<crate::types::TypeConfig, ClientWriteError<crate::types::TypeConfig>>,
) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ProposeError::NotLeader { leader: f.leader_id }
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ProposeError::LeaderChanged,
        RaftError::APIError(other) => ProposeError::Internal(other.to_string()),
        RaftError::Fatal(_) => ProposeError::Stopped,
    }
}

impl Node {
    /// Makes a membership change (on the leader, forwarding it there if
    /// need be); returns the member added or changed and the members after.
    pub async fn change_members(
        &self,
        change: MemberChange,
    ) -> Result<(u64, Vec<(u64, Member, bool)>), ProposeError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout();
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let result = if leader == self.member_id() {
                self.change_members_here(change.clone()).await
            } else {
                self.forward_change(leader, &change).await
            };
            match result {
                Err(ProposeError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn forward_change(
        &self,
        leader: u64,
        change: &MemberChange,
    ) -> Result<(u64, Vec<(u64, Member, bool)>), ProposeError> {
        let mut client = self.forward_client(leader)?;
        let req =
            pb::ChangeMembersRequest { route: Some(self.route(leader)), change: Some(change.to_wire()) };
        let resp = match client.change_members(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if crate::forward::never_sent(&s) => return Err(ProposeError::NotLeader { leader: None }),
            Err(s) => {
                return Err(ProposeError::Internal(format!("forward a membership change: {}", s.message())));
            }
        };
        let members = resp
            .members
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    Member { name: m.name, peer_urls: m.peer_urls, client_urls: m.client_urls },
                    m.is_learner,
                )
            })
            .collect();
        match resp.result {
            Some(pb::change_members_response::Result::Id(id)) => Ok((id, members)),
            Some(pb::change_members_response::Result::Error(e)) => Err(crate::forward::from_wire(e)),
            None => Err(ProposeError::Internal("empty answer to a membership change".into())),
        }
    }

    /// Makes a membership change on this member, which must be the leader.
    pub(crate) async fn change_members_here(
        &self,
        change: MemberChange,
    ) -> Result<(u64, Vec<(u64, Member, bool)>), ProposeError> {
        let status = self.status();
        if !status.is_leader {
            return Err(ProposeError::NotLeader { leader: status.leader });
        }
        let members = self.members();
        let find = |id: u64| members.iter().find(|(m, _, _)| *m == id).cloned();
        let urls_taken = |urls: &[String], except: Option<u64>| {
            members
                .iter()
                .filter(|(id, _, _)| Some(*id) != except)
                .any(|(_, m, _)| m.peer_urls.iter().any(|u| urls.contains(u)))
        };
        let raft = self.raft();
        let id = match change {
            MemberChange::Add { peer_urls, is_learner, name } => {
                if urls_taken(&peer_urls, None) {
                    return Err(ProposeError::PeerUrlExists);
                }
                if is_learner && members.iter().filter(|(_, _, l)| *l).count() >= MAX_LEARNERS {
                    return Err(ProposeError::TooManyLearners);
                }
                let id = self.new_member_id(&peer_urls, &members);
                let member = Member { name, peer_urls, client_urls: Vec::new() };
                if is_learner {
                    raft.add_learner(id, member, false).await.map_err(write_error)?;
                } else {
                    let add = ChangeMembers::AddVoters(BTreeMap::from([(id, member)]));
                    raft.change_membership(add, true).await.map_err(write_error)?;
                }
                tracing::info!(member = format_args!("{id:x}"), is_learner, "added member");
                id
            }
            MemberChange::Remove(id) => {
                let (_, _, is_learner) = find(id).ok_or(ProposeError::MemberNotFound)?;
                let change = if is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                raft.change_membership(change, false).await.map_err(write_error)?;
                self.forget_peer(id);
                tracing::info!(member = format_args!("{id:x}"), "removed member");
                id
            }
            MemberChange::Promote(id) => {
                let (_, _, is_learner) = find(id).ok_or(ProposeError::MemberNotFound)?;
                if !is_learner {
                    return Err(ProposeError::MemberNotLearner);
                }
                if !self.learner_in_sync(id) {
                    return Err(ProposeError::LearnerNotReady);
                }
                let promote = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                raft.change_membership(promote, true).await.map_err(write_error)?;
                tracing::info!(member = format_args!("{id:x}"), "promoted learner");
                id
            }
            MemberChange::Update { id, peer_urls, name, client_urls } => {
                let (_, mut member, _) = find(id).ok_or(ProposeError::MemberNotFound)?;
                if !peer_urls.is_empty() {
                    if urls_taken(&peer_urls, Some(id)) {
                        return Err(ProposeError::PeerUrlExists);
                    }
                    member.peer_urls = peer_urls;
                }
                if !name.is_empty() {
                    member.name = name;
                }
                if !client_urls.is_empty() {
                    member.client_urls = client_urls;
                }
                let set = ChangeMembers::SetNodes(BTreeMap::from([(id, member)]));
                raft.change_membership(set, true).await.map_err(write_error)?;
                id
            }
        };
        Ok((id, self.members()))
    }

    /// A member id for new peer URLs, as etcd derives it (URLs, token and
    /// the time), that no member has.
    fn new_member_id(&self, peer_urls: &[String], members: &[(u64, Member, bool)]) -> u64 {
        let mut now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        loop {
            let id = ids::member_id_at(peer_urls, self.token(), now);
            if id != 0 && !members.iter().any(|(m, _, _)| *m == id) {
                return id;
            }
            now += 1;
        }
    }

    /// Whether a learner's replicated log is within 10 % of the leader's.
    fn learner_in_sync(&self, id: u64) -> bool {
        let metrics = self.raft().metrics();
        let m = metrics.borrow_watched();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map_or(0, |log_id| log_id.index);
        last == 0 || matched as f64 >= last as f64 * READY_SHARE
    }

    /// Hands leadership to `target` (this member must be the leader) and
    /// waits until it has it.
    pub async fn move_leader(&self, target: u64) -> Result<(), ProposeError> {
        let status = self.status();
        if !status.is_leader {
            return Err(ProposeError::NotLeader { leader: status.leader });
        }
        let voter = self.members().into_iter().any(|(id, _, learner)| id == target && !learner);
        if !voter {
            return Err(ProposeError::BadTransferee);
        }
        if target == self.member_id() {
            return Ok(());
        }
        self.raft().trigger().transfer_leader(target).await.map_err(|_| ProposeError::Stopped)?;
        let wait = self.raft().wait(Some(self.request_timeout()));
        wait.current_leader(target, "move leader").await.map(|_| ()).map_err(|_| ProposeError::Timeout)
    }

    /// Publishes this member's name and client URLs into the membership
    /// (etcd's `publish`) once a leader is known; retries until it is done.
    pub(crate) async fn publish_loop(node: std::sync::Weak<Node>) {
        loop {
            let Some(n) = node.upgrade() else { return };
            let mine = n.members().into_iter().find(|(id, _, _)| *id == n.member_id());
            let Some((_, member, _)) = mine else {
                // Not (yet) a member: a removed member, or one joining.
                drop(n);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let (name, client_urls) = n.advertised();
            if member.name == name && member.client_urls == client_urls {
                n.set_published();
                return;
            }
            let change = MemberChange::Update { id: n.member_id(), peer_urls: Vec::new(), name, client_urls };
            match n.change_members(change).await {
                Ok(_) => tracing::info!(
                    member = format_args!("{:x}", n.member_id()),
                    "published name and client URLs"
                ),
                Err(e) => tracing::debug!(error = %e, "publish name and client URLs; will retry"),
            }
            drop(n);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
