//! The openraft type configuration Keelson runs with, and the application
//! types it names: what a log entry carries ([`Command`]), what applying one
//! returns ([`CommandResult`]), and what a cluster member is ([`Member`]).
//!
//! These are deliberately minimal: a [`Command`] is an opaque, already-encoded
//! client request (later a prost-encoded etcd request), so the log store never
//! needs to understand it.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

openraft::declare_raft_types!(
    /// Keelson's openraft type configuration: `u64` node ids, [`Member`]
    /// nodes, [`Command`] entries and the default entry, vote and leader id
    /// types on the tokio runtime.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = Member,
);

/// A node id.
pub type NodeId = u64;
/// A log id: the leader that proposed an entry and the entry's index.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// The leader id a log id carries: term and node id.
pub type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
/// A vote: the leader id voted for, and whether a quorum granted it.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A raft log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// The payload of a raft log entry: blank, normal ([`Command`]) or membership.
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
/// A membership configuration.
pub type Membership = openraft::Membership<NodeId, Member>;
/// A membership configuration and the log id that introduced it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

/// One member of the cluster, as etcd's `MemberList` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name (`--name`).
    pub name: String,
    /// URLs other members reach it on (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// URLs clients reach it on (`--advertise-client-urls`).
    pub client_urls: Vec<String>,
}

/// An opaque, already-encoded client request: the payload of a normal log
/// entry. Serialized with serde as a byte string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command(pub Bytes);

/// The opaque, encoded result of applying a [`Command`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandResult(pub Bytes);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print user data: only its size.
        write!(f, "command({} bytes)", self.0.len())
    }
}

impl fmt::Display for CommandResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command-result({} bytes)", self.0.len())
    }
}

macro_rules! serde_as_bytes {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_byte_buf(BytesVisitor).map($ty)
            }
        }
    };
}

serde_as_bytes!(Command);
serde_as_bytes!(CommandResult);

/// Accepts a byte string, or a sequence of bytes (what self-describing
/// formats such as JSON produce for one).
struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_serde_round_trips_as_bytes() {
        let cmd = Command(Bytes::from_static(b"\x00\x01put"));
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(json, "[0,1,112,117,116]");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
    }

    #[test]
    fn command_display_hides_the_payload() {
        assert_eq!(Command(Bytes::from_static(b"secret")).to_string(), "command(6 bytes)");
    }
}
