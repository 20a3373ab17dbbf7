//! Generated code of our protos (tonic stubs, prost messages, pbjson serde impls).

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("macp.control_plane.v1");
include!(concat!(env!("OUT_DIR"), "/macp.control_plane.v1.serde.rs"));

/// Our encoded FileDescriptorSet (gRPC reflection, route checks).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/control_plane_descriptor.bin"));
