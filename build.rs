//! Compiles our protos (with protox, so no system protoc is needed for them), generates tonic
//! stubs and pbjson serde impls, and writes two descriptor sets: ours (gRPC reflection) and the
//! MACP runtime's (the payload codec's descriptor pool).
use std::{env, fs, path::PathBuf};

use prost::Message;

const OUR_PROTOS: &[&str] = &[
    "macp/control_plane/v1/control_plane.proto",
    "macp/control_plane/v1/scenario_registry.proto",
];

const RUNTIME_PROTOS: &[&str] = &[
    "macp/v1/envelope.proto",
    "macp/v1/core.proto",
    "macp/v1/policy.proto",
    "macp/modes/decision/v1/decision.proto",
    "macp/modes/proposal/v1/proposal.proto",
    "macp/modes/task/v1/task.proto",
    "macp/modes/handoff/v1/handoff.proto",
    "macp/modes/quorum/v1/quorum.proto",
    "macp/modes/multi_round/v1/multi_round.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=control_plane_proto");

    let ours = protox::compile(OUR_PROTOS, ["control_plane_proto"])?;
    let ours_bytes = ours.encode_to_vec();
    fs::write(out_dir.join("control_plane_descriptor.bin"), &ours_bytes)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(ours)?;
    pbjson_build::Builder::new()
        .register_descriptors(&ours_bytes)?
        .build(&[".macp.control_plane"])?;

    // `macp-proto` declares `links = "macp_proto"`, which hands us its proto directory.
    let runtime_dir = env::var("DEP_MACP_PROTO_PROTO_DIR")?;
    let runtime = protox::compile(RUNTIME_PROTOS, [runtime_dir])?;
    fs::write(
        out_dir.join("runtime_descriptor.bin"),
        runtime.encode_to_vec(),
    )?;
    Ok(())
}
