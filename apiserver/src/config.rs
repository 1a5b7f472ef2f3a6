//! [`GrpcConfig`]: the knobs of the etcd gRPC services, named like etcd's
//! flags.

use serde::Deserialize;

/// What etcd allows on top of `--max-request-bytes` for gRPC framing when it
/// sets the server's receive limit (etcd's `grpcOverheadBytes`).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Settings of the etcd v3 gRPC services.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GrpcConfig {
    /// Largest request a client may propose (etcd's `--max-request-bytes`,
    /// 1.5 MiB). A larger write fails with "etcdserver: request is too
    /// large"; gRPC messages up to this plus [`GRPC_OVERHEAD_BYTES`] are
    /// received at all.
    pub max_request_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig { max_request_bytes: 3 << 19 }
    }
}

/// A [`GrpcConfig`] that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum GrpcConfigError {
    #[error("grpc config: max-request-bytes must be greater than zero")]
    ZeroMaxRequestBytes,
}

impl GrpcConfig {
    pub fn validate(&self) -> Result<(), GrpcConfigError> {
        if self.max_request_bytes == 0 {
            return Err(GrpcConfigError::ZeroMaxRequestBytes);
        }
        Ok(())
    }

    /// The gRPC receive limit: the request limit plus etcd's overhead.
    pub fn max_recv_bytes(&self) -> usize {
        self.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_etcds() {
        let cfg = GrpcConfig::default();
        assert_eq!(cfg.max_request_bytes, 1_572_864);
        assert_eq!(cfg.max_recv_bytes(), 1_572_864 + 524_288);
        cfg.validate().unwrap();
        assert!(GrpcConfig { max_request_bytes: 0 }.validate().is_err());
    }

    #[test]
    fn reads_kebab_case_and_rejects_unknown_keys() {
        let cfg: GrpcConfig = serde_json::from_str(r#"{"max-request-bytes": 10}"#).unwrap();
        assert_eq!(cfg.max_request_bytes, 10);
        assert!(serde_json::from_str::<GrpcConfig>(r#"{"max-requests": 10}"#).is_err());
        let empty: GrpcConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, GrpcConfig::default());
    }
}
