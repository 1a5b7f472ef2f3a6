//! `serviceaccounts/{name}/token` (TokenRequest): a JWT for the service
//! account, signed (ES256) with the cluster's service-account key, which is
//! kept in the replicated store like the CA so every member signs with the
//! same key. Verifying these tokens is the authentication work's.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::handlers::KubeApi;
use super::resources::ResourceType;
use super::status::{ApiError, FieldError};
use super::storage::ReadAt;
use crate::backend::Backend;

/// Key of the service-account signing key (PKCS#8 DER, base64) in the store.
pub const SA_KEY: &str = "/keelson/pki/service-account";
/// The issuer kube-apiserver uses by default (`--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signing key: created once for the cluster, read back by every member.
async fn signing_key<B: Backend>(api: &KubeApi<B>) -> Result<EcdsaKeyPair, ApiError> {
    let fresh =
        rcgen::KeyPair::generate().map_err(|e| ApiError::internal(format!("service-account key: {e}")))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(fresh.serialize_der());
    let stored = api.storage.create_raw(SA_KEY, encoded.into_bytes()).await?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&stored)
        .map_err(|e| ApiError::internal(format!("service-account key in the store: {e}")))?;
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| ApiError::internal(format!("service-account key: {e}")))
}

/// Signs `claims` as a compact JWS (ES256).
fn sign(key: &EcdsaKeyPair, claims: &Value) -> Result<String, ApiError> {
    let kid = b64(ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref()).as_ref());
    let header = json!({"alg": "ES256", "kid": kid});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let rng = ring::rand::SystemRandom::new();
    let sig = key.sign(&rng, input.as_bytes()).map_err(|_| ApiError::internal("signing the token failed"))?;
    Ok(format!("{input}.{}", b64(sig.as_ref())))
}

pub async fn request<B: Backend>(
    api: &KubeApi<B>,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode TokenRequest: {e}")))?
    };
    let Some(sa) = api.storage.get(&rt.key(ns, name), ReadAt::Latest).await? else {
        return Err(ApiError::not_found("", "serviceaccounts", name));
    };
    let spec = &req["spec"];
    let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if expiration > 1 << 32 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let audiences = match spec["audiences"].as_array().filter(|a| !a.is_empty()) {
        Some(a) => Value::Array(a.clone()),
        None => json!([ISSUER]),
    };
    let now = jiff::Timestamp::now().as_second();
    let ns = ns.unwrap_or_default();
    let uid = sa.object["metadata"]["uid"].clone();
    let claims = json!({
        "aud": audiences,
        "exp": now + expiration,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}},
    });
    let token = sign(&signing_key(api).await?, &claims)?;
    let expires =
        jiff::Timestamp::from_second(now + expiration).map_err(|e| ApiError::internal(e.to_string()))?;
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    if !req["metadata"].is_object() {
        req["metadata"] = json!({});
    }
    req["metadata"]["name"] = json!(name);
    req["metadata"]["namespace"] = json!(ns);
    req["metadata"]["creationTimestamp"] = Value::Null;
    req["spec"]["audiences"] = audiences;
    req["spec"]["expirationSeconds"] = json!(expiration);
    req["status"] = json!({"token": token, "expirationTimestamp": expires.to_string()});
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&req).unwrap_or_default(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_es256_jws_that_verify_with_the_public_key() {
        let fresh = rcgen::KeyPair::generate().unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &fresh.serialize_der(), &rng).unwrap();
        let token = sign(&key, &json!({"sub": "system:serviceaccount:default:x"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            key.public_key().as_ref().to_vec(),
        );
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:x");
    }
}
