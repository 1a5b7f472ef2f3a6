//! Compiles the etcd-compatible `.proto` files under `proto/` with the
//! vendored `protoc`, so no system protobuf compiler is needed.

use std::io;

const PROTOS: [&str; 5] =
    ["proto/kv.proto", "proto/auth.proto", "proto/rpc.proto", "proto/raft.proto", "proto/raftpeer.proto"];

fn main() -> io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;

    // Same effect as exporting PROTOC, without mutating the process environment.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Every `bytes` field becomes `bytes::Bytes` (cheap clones, zero-copy decode).
        .bytes(".")
        .compile_with_config(config, &PROTOS, &["proto"])?;

    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
