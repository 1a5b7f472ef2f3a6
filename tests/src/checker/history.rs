//! The recorded history: what clients asked, when, and what they were told.
//!
//! Everything here is plain data that serializes to JSON, so a failing run
//! can keep its history file and the checkers can be re-run on it later
//! ([`History::to_json`], [`History::from_json`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::watch::WatchRecord;

/// Identifies one client (one logical sequential caller) of the history.
pub type ClientId = u64;

/// A byte string (key or value). In JSON it is a string when it is valid
/// UTF-8 and an array of numbers otherwise.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Hash, Eq and Ord of `Bytes` are those of its `Vec<u8>`, which are those of `[u8]`.
impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }
}
impl From<String> for Bytes {
    fn from(s: String) -> Bytes {
        Bytes(s.into_bytes())
    }
}
impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}
impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => self.0.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Raw(Vec<u8>),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Text(s) => Bytes(s.into_bytes()),
            Repr::Raw(v) => Bytes(v),
        })
    }
}

/// The end of the range of every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes(end);
        }
    }
    Bytes(vec![0])
}

/// Whether `key` is in etcd's range `[start, end)`: an empty `end` means
/// the single key `start`, `end == "\0"` means every key `>= start`.
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// mvccpb.KeyValue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Bytes,
    #[serde(default)]
    pub value: Bytes,
    #[serde(default)]
    pub create_revision: i64,
    #[serde(default)]
    pub mod_revision: i64,
    #[serde(default)]
    pub version: i64,
    #[serde(default)]
    pub lease: i64,
}

/// RangeRequest (a get). `range_end` follows etcd: empty for one key,
/// `"\0"` for every key from `key` on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Bytes,
    #[serde(default)]
    pub range_end: Bytes,
    /// 0 reads the current revision.
    #[serde(default)]
    pub revision: i64,
    /// 0 means no limit.
    #[serde(default)]
    pub limit: i64,
    #[serde(default)]
    pub count_only: bool,
    #[serde(default)]
    pub keys_only: bool,
}

/// PutRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    #[serde(default)]
    pub lease: i64,
    #[serde(default)]
    pub prev_kv: bool,
}

/// DeleteRangeRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub key: Bytes,
    #[serde(default)]
    pub range_end: Bytes,
    #[serde(default)]
    pub prev_kv: bool,
}

/// What a Compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Value(Bytes),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// A Compare on one key (range compares are not modelled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// RequestOp inside a Txn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOp {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
}

/// TxnRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    #[serde(default)]
    pub compare: Vec<Compare>,
    #[serde(default)]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

/// One KV (or lease) request as a client sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRequest),
    Txn(TxnRequest),
    /// `id == 0` lets the server choose; the id is then taken from the
    /// response (an Unknown grant with `id == 0` is ignored: nobody can
    /// know its id, so nobody can use it).
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
}

impl Request {
    pub fn get(key: &str) -> Request {
        Request::Range(RangeRequest { key: key.into(), ..Default::default() })
    }
    pub fn get_prefix(prefix: &str) -> Request {
        Request::Range(RangeRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
    }
    pub fn put(key: &str, value: &str) -> Request {
        Request::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })
    }
    pub fn delete(key: &str) -> Request {
        Request::DeleteRange(DeleteRequest { key: key.into(), ..Default::default() })
    }

    /// Whether the request can change the keyspace (a Range never does; a
    /// Txn might).
    pub fn is_write(&self) -> bool {
        match self {
            Request::Range(_) => false,
            Request::Txn(t) => t.success.iter().chain(&t.failure).any(|op| !matches!(op, TxnOp::Range(_))),
            _ => true,
        }
    }
}

/// The result of one RequestOp inside a Txn (its header is not kept: the
/// Txn's own header carries the revision).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpResponse {
    Range {
        kvs: Vec<KeyValue>,
        count: i64,
        #[serde(default)]
        more: bool,
    },
    Put {
        prev_kv: Option<KeyValue>,
    },
    Delete {
        deleted: i64,
        #[serde(default)]
        prev_kvs: Vec<KeyValue>,
    },
}

/// A successful response; `revision` is always the header revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Range {
        revision: i64,
        kvs: Vec<KeyValue>,
        count: i64,
        #[serde(default)]
        more: bool,
    },
    Put {
        revision: i64,
        prev_kv: Option<KeyValue>,
    },
    DeleteRange {
        revision: i64,
        deleted: i64,
        #[serde(default)]
        prev_kvs: Vec<KeyValue>,
    },
    Txn {
        revision: i64,
        succeeded: bool,
        responses: Vec<TxnOpResponse>,
    },
    LeaseGrant {
        revision: i64,
        id: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
}

impl Response {
    /// The header revision.
    pub fn revision(&self) -> i64 {
        match self {
            Response::Range { revision, .. }
            | Response::Put { revision, .. }
            | Response::DeleteRange { revision, .. }
            | Response::Txn { revision, .. }
            | Response::LeaseGrant { revision, .. }
            | Response::LeaseRevoke { revision } => *revision,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered.
    Ok(Response),
    /// Definitely not applied (the server rejected it before applying it:
    /// an invalid request, a lease that does not exist, a future revision,
    /// a compacted revision, …). Ignored by the linearizability checker.
    Failed(String),
    /// Timed out, connection lost, leader changed after sending: it may or
    /// may not have been applied. Its return time counts as +infinity.
    Unknown(String),
}

/// One call of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: ClientId,
    /// Monotonic nanoseconds when the request was sent.
    pub call: u64,
    /// Monotonic nanoseconds when the outcome arrived (for Unknown: when the
    /// client gave up; the checkers use +infinity instead).
    pub ret: u64,
    pub request: Request,
    pub outcome: Outcome,
}

impl Operation {
    /// The return time the checkers use: `u64::MAX` for Unknown outcomes.
    pub fn effective_return(&self) -> u64 {
        match self.outcome {
            Outcome::Unknown(_) => u64::MAX,
            _ => self.ret,
        }
    }
    pub fn response(&self) -> Option<&Response> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }
}

/// Everything recorded in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The revision of the store before the first operation (a new etcd
    /// cluster starts at 1). The keyspace is assumed empty at that point.
    pub initial_revision: i64,
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub watches: Vec<WatchRecord>,
    /// Compact requests the clients sent (not modelled as operations; the
    /// watch checks use them: etcd leaves a watch event's prev_kv unset
    /// when the previous version was compacted by the time it is sent).
    #[serde(default)]
    pub compactions: Vec<Compaction>,
}

/// A Compact request: when it was sent and at which revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// Monotonic nanoseconds when it was sent.
    pub time: u64,
    pub revision: i64,
}

impl History {
    /// An empty history of a new cluster (revision 1, no keys).
    pub fn new() -> History {
        History { initial_revision: 1, operations: Vec::new(), watches: Vec::new(), compactions: Vec::new() }
    }

    /// Appends an operation; returns its index.
    pub fn record(
        &mut self,
        client: ClientId,
        call: u64,
        ret: u64,
        request: Request,
        outcome: Outcome,
    ) -> usize {
        self.operations.push(Operation { client, call, ret, request, outcome });
        self.operations.len() - 1
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a history always serializes")
    }

    pub fn from_json(text: &str) -> serde_json::Result<History> {
        serde_json::from_str(text)
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<History> {
        Ok(History::from_json(&std::fs::read_to_string(path)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_json_is_text_or_numbers() {
        let text = Bytes::from("a/b");
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"a/b\"");
        let raw = Bytes(vec![0xff, 0x00]);
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(json, "[255,0]");
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), raw);
        assert_eq!(serde_json::from_str::<Bytes>("\"a/b\"").unwrap(), text);
    }

    #[test]
    fn prefix_end_and_ranges() {
        assert_eq!(prefix_end(b"a/"), Bytes::from("a0"));
        assert_eq!(prefix_end(&[0xff]), Bytes(vec![0]));
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
        assert!(in_range(b"zz", b"a", b"\0"));
        assert!(in_range(b"a/x", b"a/", b"a0"));
        assert!(!in_range(b"a0", b"a/", b"a0"));
    }
}
