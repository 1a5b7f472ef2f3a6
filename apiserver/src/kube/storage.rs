//! Objects in the KV store. Values are the served JSON without
//! `metadata.resourceVersion`; reads set it to the key's `mod_revision`.
//! Every write is one compare-and-swap Txn through raft.

use std::sync::Arc;

use bytes::Bytes;
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use keelson_proto::keelsonraftpb::internal_request::Request as R;
use keelson_proto::mvccpb::KeyValue;
use serde_json::Value;

use super::status::ApiError;
use crate::backend::Backend;
use crate::context::{Ctx, expect_response};

/// An object as read from the store.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: Bytes,
    /// The object with `metadata.resourceVersion` set.
    pub object: Value,
    pub mod_revision: i64,
}

/// Which state a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// The latest committed state (a read barrier first): resourceVersion
    /// unset.
    Latest,
    /// Whatever this member has applied: resourceVersion "0".
    Local,
    /// Exactly this revision (410 once compacted).
    Exact(i64),
}

/// What a compare-and-swap write found instead of what it expected.
#[derive(Debug)]
pub enum WriteError {
    /// The key exists (create) or changed (update/delete); the current
    /// object, if any.
    Mismatch(Option<Stored>),
    Api(ApiError),
}

impl From<ApiError> for WriteError {
    fn from(e: ApiError) -> Self {
        WriteError::Api(e)
    }
}

/// The end of a prefix range: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Decodes a stored value, setting its resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Stored, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("object at {} is not JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(Stored { key: kv.key.clone(), object, mod_revision: kv.mod_revision })
}

/// Appends the JSON an object is served as (the stored bytes with
/// `metadata.resourceVersion` = `rev`) to `out` without parsing it: one scan
/// finds the top-level `"metadata":{` and the resourceVersion goes first in
/// it. Returns false (and appends nothing) when the bytes are not an object
/// with an object `metadata`, or mention `"resourceVersion"` anywhere (it
/// may already be set): the caller decodes those instead. For an
/// unfiltered LIST this is ~4x cheaper than parsing and re-serializing.
pub fn append_served(stored: &[u8], rev: i64, out: &mut Vec<u8>) -> bool {
    const RV: &[u8] = b"\"resourceVersion\"";
    if stored.windows(RV.len()).any(|w| w == RV) {
        return false;
    }
    let Some(at) = metadata_body(stored) else { return false };
    out.extend_from_slice(&stored[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rev.to_string().as_bytes());
    out.push(b'"');
    if stored[at..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&stored[at..]);
    true
}

/// The offset just after the `{` that opens the top-level `metadata`
/// object of a JSON object. The whole value is scanned: strings must end
/// and brackets balance, with nothing but whitespace after (a truncated or
/// garbled value is left to the decoder, which reports it).
fn metadata_body(b: &[u8]) -> Option<usize> {
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut depth = 1;
    let mut found = None;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                let key = &b[start..i];
                i += 1;
                if depth == 1 && key == b"metadata" {
                    let colon = skip_ws(i);
                    if b.get(colon) == Some(&b':') {
                        let open = skip_ws(colon + 1);
                        if b.get(open) != Some(&b'{') || found.is_some() {
                            return None;
                        }
                        found = Some(open + 1);
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return if skip_ws(i + 1) == b.len() { found } else { None };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

pub fn set_resource_version(object: &mut Value, rev: i64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// The bytes stored for an object: its JSON without resourceVersion.
pub fn encode(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&WithoutResourceVersion(object)).unwrap_or_default()
}

/// Serializes an object as it is, less `metadata.resourceVersion`
/// (without cloning it).
struct WithoutResourceVersion<'a>(&'a Value);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else { return self.0.serialize(s) };
        let mut map = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    map.serialize_entry(k, &MetadataWithoutResourceVersion(meta))?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

struct MetadataWithoutResourceVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for MetadataWithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.0.iter().filter(|(k, _)| k.as_str() != "resourceVersion");
        let mut map = s.serialize_map(Some(fields.clone().count()))?;
        for (k, v) in fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

pub struct Storage<B> {
    pub(crate) ctx: Arc<Ctx<B>>,
}

impl<B> Clone for Storage<B> {
    fn clone(&self) -> Self {
        Storage { ctx: self.ctx.clone() }
    }
}

/// One page of a list.
#[derive(Debug)]
/// A page of stored key-values, as read.
pub struct RawPage {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
    pub more: bool,
    /// Keys in the whole range.
    pub count: i64,
}

pub struct Page {
    pub items: Vec<Stored>,
    /// The revision the page was read at.
    pub revision: i64,
    /// More keys follow the last one returned.
    pub more: bool,
    /// Keys left after this page (for `remainingItemCount`).
    pub remaining: i64,
}

impl<B: Backend> Storage<B> {
    pub(crate) fn new(ctx: Arc<Ctx<B>>) -> Self {
        Storage { ctx }
    }

    /// Waits until this member has applied everything committed so far.
    pub async fn barrier(&self) -> Result<(), ApiError> {
        self.ctx.backend.read_barrier().await.map_err(|e| ApiError::from(crate::errors::EtcdError::from(e)))
    }

    /// The revision a read at `at` sees (after a barrier for Latest).
    pub async fn resolve(&self, at: ReadAt) -> Result<i64, ApiError> {
        match at {
            ReadAt::Latest => {
                self.barrier().await?;
                Ok(self.ctx.backend.store().current_revision())
            }
            ReadAt::Local => Ok(self.ctx.backend.store().current_revision()),
            ReadAt::Exact(rev) => {
                let store = self.ctx.backend.store();
                if rev > store.current_revision() {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {rev}, current: {}",
                        store.current_revision()
                    )));
                }
                if rev < store.compacted_revision() {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rev} ({})",
                        store.compacted_revision()
                    )));
                }
                Ok(rev)
            }
        }
    }

    pub async fn get(&self, key: &str, at: ReadAt) -> Result<Option<Stored>, ApiError> {
        let rev = match at {
            ReadAt::Latest => {
                self.barrier().await?;
                0
            }
            ReadAt::Local => 0,
            ReadAt::Exact(rev) => self.resolve(ReadAt::Exact(rev)).await?,
        };
        let req = RangeRequest { key: key.as_bytes().to_vec().into(), revision: rev, ..Default::default() };
        let resp = self.ctx.try_with_store(move |s| s.range(&req)).await.map_err(ApiError::from)?;
        resp.kvs.first().map(decode).transpose()
    }

    /// Up to `limit` objects (0: all) with keys in [start, end) at `rev`
    /// (0: the current revision).
    pub async fn list(&self, start: &[u8], end: &[u8], rev: i64, limit: i64) -> Result<Page, ApiError> {
        let raw = self.list_raw(start, end, rev, limit).await?;
        let items = raw.kvs.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let remaining = (raw.count - items.len() as i64).max(0);
        Ok(Page { items, revision: raw.revision, more: raw.more, remaining })
    }

    /// [`Storage::list`] without decoding the objects.
    pub async fn list_raw(
        &self,
        start: &[u8],
        end: &[u8],
        rev: i64,
        limit: i64,
    ) -> Result<RawPage, ApiError> {
        let req = RangeRequest {
            key: start.to_vec().into(),
            range_end: end.to_vec().into(),
            revision: rev,
            limit,
            ..Default::default()
        };
        let resp = self.ctx.try_with_store(move |s| s.range(&req)).await.map_err(ApiError::from)?;
        let revision = if rev > 0 { rev } else { resp.header.as_ref().map_or(0, |h| h.revision) };
        Ok(RawPage { kvs: resp.kvs, revision, more: resp.more, count: resp.count })
    }

    async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, ApiError> {
        let resp = self.ctx.propose(R::Txn(txn)).await.map_err(ApiError::from)?;
        expect_response!(resp, Txn).map_err(ApiError::from)
    }

    fn failed_current(resp: &TxnResponse) -> Result<Option<Stored>, ApiError> {
        for r in &resp.responses {
            if let Some(keelson_proto::etcdserverpb::response_op::Response::ResponseRange(range)) =
                &r.response
            {
                return range.kvs.first().map(decode).transpose();
            }
        }
        Ok(None)
    }

    /// Writes `object` at `key` if the key's mod_revision is `expected`
    /// (0: the key must not exist). Returns the new revision.
    pub async fn put_if(&self, key: &str, object: &Value, expected: i64) -> Result<i64, WriteError> {
        let key_bytes: Bytes = key.as_bytes().to_vec().into();
        let (target, union) = if expected == 0 {
            (CompareTarget::Create, TargetUnion::CreateRevision(0))
        } else {
            (CompareTarget::Mod, TargetUnion::ModRevision(expected))
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: target as i32,
                key: key_bytes.clone(),
                range_end: Bytes::new(),
                target_union: Some(union),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key_bytes.clone(),
                    value: encode(object).into(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest { key: key_bytes, ..Default::default() })),
            }],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            Ok(resp.header.map_or(0, |h| h.revision))
        } else {
            Err(WriteError::Mismatch(Self::failed_current(&resp)?))
        }
    }

    /// Deletes `key` if its mod_revision is `expected`. Returns the
    /// revision of the delete.
    pub async fn delete_if(&self, key: &str, expected: i64) -> Result<i64, WriteError> {
        let key_bytes: Bytes = key.as_bytes().to_vec().into();
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key_bytes.clone(),
                range_end: Bytes::new(),
                target_union: Some(TargetUnion::ModRevision(expected)),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: key_bytes.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest { key: key_bytes, ..Default::default() })),
            }],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            Ok(resp.header.map_or(0, |h| h.revision))
        } else {
            Err(WriteError::Mismatch(Self::failed_current(&resp)?))
        }
    }

    /// Deletes every key in [start, end).
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<i64, ApiError> {
        let req = DeleteRangeRequest {
            key: start.to_vec().into(),
            range_end: end.to_vec().into(),
            ..Default::default()
        };
        let resp = self.ctx.propose(R::DeleteRange(req)).await.map_err(ApiError::from)?;
        let resp = expect_response!(resp, DeleteRange).map_err(ApiError::from)?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// Writes raw bytes at `key` if it does not exist; returns the value
    /// stored there afterwards (ours or the one already there).
    pub async fn create_raw(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        let key_bytes: Bytes = key.as_bytes().to_vec().into();
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key_bytes.clone(),
                range_end: Bytes::new(),
                target_union: Some(TargetUnion::CreateRevision(0)),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key_bytes.clone(),
                    value: value.clone().into(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest { key: key_bytes, ..Default::default() })),
            }],
        };
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(value);
        }
        for r in &resp.responses {
            if let Some(keelson_proto::etcdserverpb::response_op::Response::ResponseRange(range)) =
                &r.response
                && let Some(kv) = range.kvs.first()
            {
                return Ok(kv.value.to_vec());
            }
        }
        Err(ApiError::internal(format!("{key}: neither created nor found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }

    #[test]
    fn served_bytes_get_the_resource_version_without_a_parse() {
        let served = |stored: &str| {
            let mut out = Vec::new();
            append_served(stored.as_bytes(), 42, &mut out).then(|| String::from_utf8(out).unwrap())
        };
        // Whatever the key order, the top-level metadata gets it.
        let s =
            r#"{"spec":{"template":{"metadata":{"labels":{"a":"b"}}}},"kind":"X","metadata":{"name":"n"}}"#;
        let out: Value = serde_json::from_str(&served(s).unwrap()).unwrap();
        assert_eq!(out["metadata"], serde_json::json!({"name": "n", "resourceVersion": "42"}));
        assert!(out["spec"]["template"]["metadata"].get("resourceVersion").is_none());
        assert_eq!(
            served(r#" { "metadata" : { } } "#).unwrap(),
            r#" { "metadata" : {"resourceVersion":"42" } } "#
        );
        // Strings that look like keys are skipped, escapes included.
        let s = r#"{"data":{"x":"\"metadata\":{\\"},"metadata":{"name":"n"}}"#;
        let out: Value = serde_json::from_str(&served(s).unwrap()).unwrap();
        assert_eq!(out["metadata"]["resourceVersion"], "42");
        assert_eq!(out["data"]["x"], "\"metadata\":{\\");
        // Not served this way: the caller decodes.
        assert_eq!(served(r#"{"metadata":{"name":"n","resourceVersion":"3"}}"#), None);
        assert_eq!(served(r#"{"metadata":"x"}"#), None);
        assert_eq!(served(r#"{"spec":{"metadata":{}}}"#), None);
        assert_eq!(served("[1]"), None);
        assert_eq!(served(r#"{"metadata":{"name":"unterminated"#), None);
    }

    #[test]
    fn stored_bytes_leave_out_the_resource_version() {
        let obj = serde_json::json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7"}, "spec": {"x": 1}});
        let bytes = encode(&obj);
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored, serde_json::json!({"kind": "Pod", "metadata": {"name": "a"}, "spec": {"x": 1}}));
        let kv = KeyValue { key: "k".into(), value: bytes.into(), mod_revision: 9, ..Default::default() };
        let back = decode(&kv).unwrap();
        assert_eq!(back.object["metadata"]["resourceVersion"], "9");
        assert!(!String::from_utf8_lossy(&encode(&obj)).contains("resourceVersion"));
    }
}
