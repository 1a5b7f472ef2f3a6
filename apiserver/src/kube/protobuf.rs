//! Request bodies in Kubernetes protobuf (`application/vnd.kubernetes.protobuf`),
//! decoded into the JSON object the API works with.
//!
//! kubectl's typed clients (`create namespace`, `create configmap`, `run`,
//! `auth can-i`, `create token`, …) send built-in kinds this way and have no
//! fallback to JSON. Responses stay JSON: clients decode by the response's
//! `Content-Type`.
//!
//! The body is the magic `k8s\0` followed by a `runtime.Unknown`: 1 `typeMeta`
//! {1 apiVersion, 2 kind}, 2 `raw` (the object's own encoding), 3
//! `contentEncoding`, 4 `contentType`. The object is decoded with the layout
//! of Kubernetes' `generated.proto` messages in `proto_schema.json` (generated
//! by `scripts/gen_proto_schema.py`; each field carries its JSON name), and
//! gets `apiVersion`/`kind` from the envelope.
//!
//! JSON forms follow Go's encoding of the same objects: messages with their
//! own form (`Time`, `MicroTime`, `Duration`, `Quantity`, `IntOrString`,
//! `RawExtension`, `FieldsV1`, the `JSONSchemaPropsOr…` unions, `ExtraValue`)
//! are converted; `bytes` are base64; a zero scalar is dropped unless the Go
//! field is a pointer or not `omitempty` (the Go marshaller writes every
//! non-pointer field, so a zero there means "unset"); a zero `Time` (an empty
//! message) is absent; an inlined Go struct (`Volume.volumeSource`) has its
//! fields in the parent object.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::{HeaderMap, header};
use base64::Engine;
use serde_json::{Map, Value};

use super::status::ApiError;

/// The media type of Kubernetes protobuf.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Whether a `Content-Type` header value is Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(MEDIA_TYPE)
}

/// The body as JSON bytes: decoded when the request's `Content-Type` is
/// protobuf and the body is not empty, unchanged otherwise.
pub fn json_body(headers: &HeaderMap, body: bytes::Bytes) -> Result<bytes::Bytes, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !is_protobuf(content_type) || body.is_empty() {
        return Ok(body);
    }
    let v = decode(&body).map_err(|e| ApiError::bad_request(format!("decoding the protobuf body: {e}")))?;
    Ok(serde_json::to_vec(&v).unwrap_or_default().into())
}

/// Decodes a protobuf body (magic, `runtime.Unknown`, object) into JSON.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("the body does not start with the protobuf magic k8s\\0")?;
    let (mut api_version, mut kind) = (String::new(), String::new());
    let mut raw: &[u8] = &[];
    let mut content_encoding = String::new();
    for f in Reader(rest) {
        match f? {
            (1, Wire::Len(tm)) => {
                for f in Reader(tm) {
                    match f? {
                        (1, Wire::Len(s)) => api_version = utf8(s)?,
                        (2, Wire::Len(s)) => kind = utf8(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(b)) => raw = b,
            (3, Wire::Len(s)) => content_encoding = utf8(s)?,
            _ => {}
        }
    }
    if !content_encoding.is_empty() {
        return Err(format!("unsupported content encoding {content_encoding:?}"));
    }
    let schema = &*SCHEMA;
    let message = schema
        .kinds
        .get(&format!("{api_version}/{kind}"))
        .or_else(|| schema.kinds.get(&kind))
        .ok_or_else(|| format!("no protobuf decoding for {api_version}, Kind={kind}"))?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    if let Some(Value::Object(fields)) = decode_message(message, raw)? {
        obj.extend(fields);
    }
    Ok(Value::Object(obj))
}

/// A field's type: a scalar or a message (by its name in the table).
#[derive(Debug)]
enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    UInt,
    Double,
    Float,
    Message(String),
}

#[derive(Debug)]
struct Field {
    json: String,
    ty: Ty,
    repeated: bool,
    map: bool,
    keep_zero: bool,
    inline: bool,
}

struct Schema {
    kinds: HashMap<String, String>,
    messages: HashMap<String, HashMap<u64, Field>>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let v: Value = serde_json::from_str(include_str!("proto_schema.json")).expect("proto_schema.json");
    let kinds = v["kinds"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, m)| (k.clone(), m.as_str().unwrap_or_default().to_string()))
        .collect();
    let mut messages = HashMap::new();
    for (name, fields) in v["messages"].as_object().into_iter().flatten() {
        let mut by_tag = HashMap::new();
        for f in fields.as_array().into_iter().flatten() {
            let flags = f[3].as_str().unwrap_or_default();
            let ty = match f[2].as_str().unwrap_or_default() {
                "string" => Ty::String,
                "bytes" => Ty::Bytes,
                "bool" => Ty::Bool,
                "int32" => Ty::Int32,
                "int64" => Ty::Int64,
                "uint32" | "uint64" => Ty::UInt,
                "double" => Ty::Double,
                "float" => Ty::Float,
                m => Ty::Message(m.to_string()),
            };
            by_tag.insert(
                f[0].as_u64().unwrap_or_default(),
                Field {
                    json: f[1].as_str().unwrap_or_default().to_string(),
                    ty,
                    repeated: flags.contains('r'),
                    map: flags.contains('m'),
                    keep_zero: flags.contains('z'),
                    inline: flags.contains('i'),
                },
            );
        }
        messages.insert(name.clone(), by_tag);
    }
    Schema { kinds, messages }
});

// Messages with their own JSON form.
const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";
const APIEXT: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.";
const JSON_SCHEMA_PROPS: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps";

/// One wire value.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// The fields of an encoded message, in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated field".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn field(&mut self) -> Result<(u64, Wire<'a>), String> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default())),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Wire::Len(self.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default())),
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok((key >> 3, wire))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let r = self.field();
        if r.is_err() {
            self.0 = &[];
        }
        Some(r)
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

/// Fields of a message by tag (the special forms only use their tags).
fn fields(data: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    Reader(data).collect()
}

fn int_field(data: &[u8], tag: u64) -> Result<Option<i64>, String> {
    let mut v = None;
    for (t, w) in fields(data)? {
        if t == tag
            && let Wire::Varint(x) = w
        {
            v = Some(x as i64);
        }
    }
    Ok(v)
}

fn bytes_field(data: &[u8], tag: u64) -> Result<Option<&[u8]>, String> {
    let mut v = None;
    for (t, w) in fields(data)? {
        if t == tag
            && let Wire::Len(b) = w
        {
            v = Some(b);
        }
    }
    Ok(v)
}

/// Embedded JSON (`RawExtension`, `FieldsV1`, apiextensions `JSON`); an
/// embedded protobuf object (`k8s\0…`) is decoded.
fn embedded(raw: &[u8]) -> Result<Value, String> {
    if raw.starts_with(MAGIC) {
        return decode(raw);
    }
    serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))
}

fn timestamp(seconds: i64) -> Result<jiff::Timestamp, String> {
    jiff::Timestamp::new(seconds, 0).map_err(|e| format!("time out of range: {e}"))
}

/// Go's `time.Duration.String()`: "1h2m3.5s", "1.5ms", "0s".
pub fn go_duration(d: i64) -> String {
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let frac = |v: u64, digits: usize| {
        if v == 0 { String::new() } else { format!(".{v:0digits$}").trim_end_matches('0').to_string() }
    };
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}{}µs", u / 1_000, frac(u % 1_000, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}{}ms", u / 1_000_000, frac(u % 1_000_000, 6));
    }
    let secs = u / 1_000_000_000;
    let mut s = format!("{}{}s", secs % 60, frac(u % 1_000_000_000, 9));
    let mins = secs / 60;
    if mins > 0 {
        s = format!("{}m{s}", mins % 60);
        let hours = mins / 60;
        if hours > 0 {
            s = format!("{hours}h{s}");
        }
    }
    format!("{sign}{s}")
}

/// A message as JSON; `None` for a zero `Time` (Go's JSON `null`, left out).
fn decode_message(name: &str, data: &[u8]) -> Result<Option<Value>, String> {
    match name {
        TIME => {
            let (secs, nanos) = (int_field(data, 1)?, int_field(data, 2)?);
            if secs.is_none() && nanos.is_none() {
                return Ok(None);
            }
            Ok(Some(Value::String(timestamp(secs.unwrap_or_default())?.to_string())))
        }
        MICRO_TIME => {
            let (secs, nanos) = (int_field(data, 1)?, int_field(data, 2)?);
            if secs.is_none() && nanos.is_none() {
                return Ok(None);
            }
            let base = timestamp(secs.unwrap_or_default())?.to_string();
            let micros = nanos.unwrap_or_default() / 1_000;
            Ok(Some(Value::String(format!("{}.{micros:06}Z", base.trim_end_matches('Z')))))
        }
        DURATION => Ok(Some(Value::String(go_duration(int_field(data, 1)?.unwrap_or_default())))),
        QUANTITY => {
            let s = bytes_field(data, 1)?.map(utf8).transpose()?.unwrap_or_default();
            Ok(Some(Value::String(s)))
        }
        INT_OR_STRING => {
            if int_field(data, 1)?.unwrap_or_default() == 1 {
                let s = bytes_field(data, 3)?.map(utf8).transpose()?.unwrap_or_default();
                Ok(Some(Value::String(s)))
            } else {
                Ok(Some(Value::from(int_field(data, 2)?.unwrap_or_default() as i32)))
            }
        }
        RAW_EXTENSION | FIELDS_V1 => match bytes_field(data, 1)? {
            Some(raw) if !raw.is_empty() => Ok(Some(embedded(raw)?)),
            _ => Ok(None),
        },
        _ if name.starts_with(APIEXT) => apiextensions(name, data),
        "api.authorization.v1.ExtraValue" | "api.authentication.v1.ExtraValue" => {
            let items = fields(data)?
                .into_iter()
                .filter_map(|(t, w)| match (t, w) {
                    (1, Wire::Len(s)) => Some(utf8(s).map(Value::String)),
                    _ => None,
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Value::Array(items)))
        }
        _ => generic(name, data).map(Some),
    }
}

/// apiextensions' `JSON` and the `JSONSchemaPropsOr…` unions (their Go
/// `MarshalJSON`); other apiextensions messages are generic.
fn apiextensions(name: &str, data: &[u8]) -> Result<Option<Value>, String> {
    let sub = |tag: u64| -> Result<Option<Value>, String> {
        match bytes_field(data, tag)? {
            Some(b) => generic(JSON_SCHEMA_PROPS, b).map(Some),
            None => Ok(None),
        }
    };
    match &name[APIEXT.len()..] {
        "Json" => match bytes_field(data, 1)? {
            Some(raw) if !raw.is_empty() => Ok(Some(embedded(raw)?)),
            _ => Ok(None),
        },
        "JsonSchemaPropsOrArray" => {
            let many = fields(data)?
                .into_iter()
                .filter_map(|(t, w)| match (t, w) {
                    (2, Wire::Len(b)) => Some(generic(JSON_SCHEMA_PROPS, b)),
                    _ => None,
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !many.is_empty() {
                return Ok(Some(Value::Array(many)));
            }
            Ok(Some(sub(1)?.unwrap_or(Value::Null)))
        }
        "JsonSchemaPropsOrBool" => match sub(2)? {
            Some(s) => Ok(Some(s)),
            None => Ok(Some(Value::Bool(int_field(data, 1)?.unwrap_or_default() != 0))),
        },
        "JsonSchemaPropsOrStringArray" => {
            let strings = fields(data)?
                .into_iter()
                .filter_map(|(t, w)| match (t, w) {
                    (2, Wire::Len(s)) => Some(utf8(s).map(Value::String)),
                    _ => None,
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !strings.is_empty() {
                return Ok(Some(Value::Array(strings)));
            }
            Ok(Some(sub(1)?.unwrap_or(Value::Null)))
        }
        _ => generic(name, data).map(Some),
    }
}

/// A scalar or message value of type `ty`.
fn value(ty: &Ty, w: Wire<'_>) -> Result<Option<Value>, String> {
    Ok(Some(match (ty, w) {
        (Ty::String, Wire::Len(b)) => Value::String(utf8(b)?),
        (Ty::Bytes, Wire::Len(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Ty::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Ty::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::UInt, Wire::Varint(v)) => Value::from(v),
        (Ty::Double, Wire::Fixed64(v)) => Value::from(f64::from_bits(v)),
        (Ty::Float, Wire::Fixed32(v)) => Value::from(f64::from(f32::from_bits(v))),
        (Ty::Message(m), Wire::Len(b)) => return decode_message(m, b),
        (ty, _) => return Err(format!("wrong wire type for a {ty:?}")),
    }))
}

/// The zero value of a type (a map entry without its value).
fn zero(ty: &Ty) -> Result<Option<Value>, String> {
    match ty {
        Ty::Message(m) => decode_message(m, &[]),
        Ty::String | Ty::Bytes => Ok(Some(Value::String(String::new()))),
        Ty::Bool => Ok(Some(Value::Bool(false))),
        _ => Ok(Some(Value::from(0))),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// A message by the table.
fn generic(name: &str, data: &[u8]) -> Result<Value, String> {
    let table = SCHEMA.messages.get(name).ok_or_else(|| format!("no protobuf layout for {name}"))?;
    let mut obj = Map::new();
    let mut inlined = Vec::new();
    for f in Reader(data) {
        let (tag, w) = f?;
        // Unknown fields (newer than the table) are skipped.
        let Some(field) = table.get(&tag) else { continue };
        if field.map {
            let Wire::Len(entry) = w else { return Err(format!("{name}.{}: map entry", field.json)) };
            let (mut key, mut val) = (String::new(), None);
            for f in Reader(entry) {
                match f? {
                    (1, Wire::Len(k)) => key = utf8(k)?,
                    (2, w) => val = value(&field.ty, w)?,
                    _ => {}
                }
            }
            let val = match val {
                Some(v) => v,
                None => zero(&field.ty)?.unwrap_or(Value::Null),
            };
            let m = obj.entry(field.json.clone()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = m {
                m.insert(key, val);
            }
        } else if field.repeated {
            let mut items = Vec::new();
            match (&field.ty, w) {
                // Packed numbers.
                (Ty::Int32 | Ty::Int64 | Ty::UInt | Ty::Bool, Wire::Len(mut b)) => {
                    while !b.is_empty() {
                        let mut r = Reader(b);
                        let v = r.varint()?;
                        b = r.0;
                        items.extend(value(&field.ty, Wire::Varint(v))?);
                    }
                }
                (ty, w) => items.extend(value(ty, w)?),
            }
            let a = obj.entry(field.json.clone()).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = a {
                a.extend(items);
            }
        } else if let Some(v) = value(&field.ty, w)? {
            if field.inline {
                inlined.push(v);
            } else if field.keep_zero || !is_zero(&v) {
                obj.insert(field.json.clone(), v);
            } else {
                obj.remove(&field.json);
            }
        }
    }
    for v in inlined {
        if let Value::Object(m) = v {
            obj.extend(m);
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // A hand encoder: fields as the Go marshaller writes them.
    fn key(tag: u64, wire: u64, out: &mut Vec<u8>) {
        varint((tag << 3) | wire, out);
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn int(tag: u64, v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        key(tag, 0, &mut out);
        varint(v as u64, &mut out);
        out
    }
    fn len(tag: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key(tag, 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }
    fn s(tag: u64, v: &str) -> Vec<u8> {
        len(tag, v.as_bytes())
    }
    fn msg(tag: u64, parts: &[Vec<u8>]) -> Vec<u8> {
        len(tag, &parts.concat())
    }
    fn entry(tag: u64, k: &str, v: Vec<u8>) -> Vec<u8> {
        msg(tag, &[s(1, k), v])
    }
    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(msg(1, &[s(1, api_version), s(2, kind)]));
        out.extend(len(2, &raw));
        out.extend(s(3, ""));
        out.extend(s(4, ""));
        out
    }
    /// ObjectMeta as Go writes it: every non-pointer field, zero or not.
    fn meta(name: &str, namespace: &str, created: Option<i64>, rest: &[Vec<u8>]) -> Vec<u8> {
        let mut parts = vec![s(1, name), s(2, ""), s(3, namespace), s(4, ""), s(5, ""), s(6, ""), int(7, 0)];
        parts.push(msg(8, &created.map(|c| vec![int(1, c), int(2, 0)]).unwrap_or_default()));
        parts.extend_from_slice(rest);
        msg(1, &parts)
    }

    #[test]
    fn namespace() {
        let raw = [meta("demo", "", None, &[]), msg(2, &[]), msg(3, &[s(1, "")])].concat();
        let v = decode(&envelope("v1", "Namespace", raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}, "spec": {}, "status": {}})
        );
    }

    #[test]
    fn config_map_with_labels() {
        let labels = [entry(11, "app", s(2, "web")), entry(11, "tier", s(2, "front"))];
        let raw =
            [meta("c", "demo", None, &labels), entry(2, "a", s(2, "b")), entry(2, "empty", vec![])].concat();
        let v = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "demo", "labels": {"app": "web", "tier": "front"}},
                "data": {"a": "b", "empty": ""},
            })
        );
    }

    #[test]
    fn secret_bytes_are_base64() {
        let raw =
            [meta("s", "demo", None, &[]), entry(2, "p", len(2, b"q\x00\xff")), s(3, "Opaque")].concat();
        let v = decode(&envelope("v1", "Secret", raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "namespace": "demo"},
                "data": {"p": "cQD/"}, "type": "Opaque",
            })
        );
    }

    #[test]
    fn pod_with_container() {
        let port = msg(6, &[s(1, "http"), int(2, 0), int(3, 80), s(4, "TCP"), s(5, "")]);
        let resources =
            msg(8, &[entry(2, "cpu", msg(2, &[s(1, "100m")])), entry(2, "memory", msg(2, &[s(1, "64Mi")]))]);
        // readinessProbe: the inlined ProbeHandler with an httpGet on a named port.
        let probe = msg(
            11,
            &[
                msg(1, &[msg(2, &[s(1, "/healthz"), msg(2, &[int(1, 1), int(2, 0), s(3, "http")])])]),
                int(2, 0),
                int(3, 1),
            ],
        );
        let liveness = msg(10, &[msg(1, &[msg(3, &[msg(1, &[int(1, 0), int(2, 8080), s(3, "")])])])]);
        let container = msg(
            2,
            &[s(1, "nginx"), s(2, "nginx:1.27"), port, resources, liveness, probe, int(16, 0), s(14, "")],
        );
        let spec = msg(2, &[container, s(3, "Always"), int(4, 30), s(6, ""), int(11, 0), s(9, "")]);
        let raw = [meta("p", "demo", Some(1_704_164_645), &[]), spec, msg(3, &[])].concat();
        let v = decode(&envelope("v1", "Pod", raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "demo", "creationTimestamp": "2024-01-02T03:04:05Z"},
                "spec": {
                    "containers": [{
                        "name": "nginx", "image": "nginx:1.27",
                        "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        "livenessProbe": {"tcpSocket": {"port": 8080}},
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "timeoutSeconds": 1},
                    }],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                },
                "status": {},
            })
        );
    }

    #[test]
    fn delete_options_keep_pointer_zeroes() {
        // gracePeriodSeconds is a pointer: 0 means "now" and is kept.
        let raw = [int(1, 0), s(4, "Foreground"), s(5, "All")].concat();
        let v = decode(&envelope("apps/v1", "DeleteOptions", raw)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "apps/v1", "kind": "DeleteOptions",
                "gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"],
            })
        );
    }

    #[test]
    fn special_forms() {
        assert_eq!(
            decode_message(MICRO_TIME, &[int(1, 1_704_164_645), int(2, 1_500_000)].concat()).unwrap(),
            Some(json!("2024-01-02T03:04:05.001500Z"))
        );
        assert_eq!(decode_message(TIME, &[]).unwrap(), None);
        assert_eq!(decode_message(DURATION, &int(1, 3_600_000_000_000)).unwrap(), Some(json!("1h0m0s")));
        assert_eq!(decode_message(RAW_EXTENSION, &s(1, r#"{"a":[1]}"#)).unwrap(), Some(json!({"a": [1]})));
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(-2_500), "-2.5µs");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(b"{}").is_err());
        assert!(decode(&envelope("v1", "Nope", vec![])).is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0x05]].concat()).is_err());
    }
}
