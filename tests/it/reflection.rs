//! The service driven through gRPC server reflection alone, the way grpcurl does it: no compiled
//! stubs, only descriptors fetched from the server and JSON bodies.

use futures::StreamExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{Value, json};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::requests;
use crate::support::{self, Backend};

/// Encodes and decodes messages known only by their descriptors.
struct DynamicCodec {
    output: MessageDescriptor,
}

struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.output.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

async fn reflect(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    responses
        .next()
        .await
        .expect("a reflection response")
        .expect("reflection ok")
        .message_response
        .expect("message response")
}

/// Every file the server describes for `symbol`, with the files it imports.
async fn descriptors(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    symbol: &str,
) -> DescriptorPool {
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut wanted = vec![MessageRequest::FileContainingSymbol(symbol.to_owned())];
    while let Some(request) = wanted.pop() {
        let MessageResponse::FileDescriptorResponse(response) = reflect(client, request).await
        else {
            panic!("expected file descriptors");
        };
        for bytes in response.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("file");
            if files.iter().any(|known| known.name == file.name) {
                continue;
            }
            for dependency in &file.dependency {
                if !files.iter().any(|known| known.name() == dependency) {
                    wanted.push(MessageRequest::FileByFilename(dependency.clone()));
                }
            }
            files.push(file);
        }
    }
    // Imports first.
    files.sort_by_key(|file| !file.name().starts_with("google/"));
    DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet { file: files })
        .expect("descriptor pool from reflection")
}

fn dynamic(pool: &DescriptorPool, name: &str, body: Value) -> DynamicMessage {
    let descriptor = pool.get_message_by_name(name).expect("message type");
    DynamicMessage::deserialize(descriptor, body).expect("JSON fits the message")
}

fn to_json(message: &DynamicMessage) -> Value {
    serde_json::to_value(message).expect("message as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_style_use_through_reflection_alone() {
    let Some(app) = support::start(Backend::Sqlite).await else {
        return;
    };
    let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut reflection = ServerReflectionClient::new(channel.clone());

    // list
    let MessageResponse::ListServicesResponse(services) =
        reflect(&mut reflection, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = services
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        "macp.control_plane.v1.ControlPlane",
        "macp.control_plane.v1.ScenarioRegistry",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} not in {names:?}"
        );
    }

    // describe
    let pool = descriptors(&mut reflection, "macp.control_plane.v1.ControlPlane").await;
    let service = pool
        .get_service_by_name("macp.control_plane.v1.ControlPlane")
        .expect("ControlPlane described");
    let methods: Vec<String> = service
        .methods()
        .map(|method| method.name().to_owned())
        .collect();
    for expected in ["RunStart", "WatchRun", "ListRunEvents", "Replay"] {
        assert!(
            methods.iter().any(|method| method == expected),
            "{expected} not in {methods:?}"
        );
    }

    // call with a JSON body
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let started = grpc
        .unary(
            tonic::Request::new(dynamic(
                &pool,
                "macp.control_plane.v1.RunStartRequest",
                json!({"request": requests::scripted_decision()}),
            )),
            PathAndQuery::from_static("/macp.control_plane.v1.ControlPlane/RunStart"),
            DynamicCodec {
                output: pool
                    .get_message_by_name("macp.control_plane.v1.RunStartResponse")
                    .expect("response type"),
            },
        )
        .await
        .expect("RunStart through reflection")
        .into_inner();
    let started = to_json(&started);
    let run_id = started["runId"].as_str().expect("runId").to_owned();
    assert_eq!(started["status"], "queued");

    // the server-streaming WatchRun, to the run's end
    grpc.ready().await.expect("ready");
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(dynamic(
                &pool,
                "macp.control_plane.v1.WatchRunRequest",
                json!({"runId": run_id, "includeSnapshot": false, "endAtTerminal": true}),
            )),
            PathAndQuery::from_static("/macp.control_plane.v1.ControlPlane/WatchRun"),
            DynamicCodec {
                output: pool
                    .get_message_by_name("macp.control_plane.v1.WatchRunResponse")
                    .expect("response type"),
            },
        )
        .await
        .expect("WatchRun through reflection")
        .into_inner();
    let mut types = Vec::new();
    while let Some(item) = stream.next().await {
        let item = to_json(&item.expect("stream item"));
        if let Some(kind) = item["event"]["type"].as_str() {
            types.push(kind.to_owned());
        }
    }
    assert_eq!(types.first().map(String::as_str), Some("run.created"));
    assert_eq!(types.last().map(String::as_str), Some("run.completed"));

    // and the stored events
    grpc.ready().await.expect("ready");
    let events = grpc
        .unary(
            tonic::Request::new(dynamic(
                &pool,
                "macp.control_plane.v1.ListRunEventsRequest",
                json!({"runId": run_id, "limit": 1000}),
            )),
            PathAndQuery::from_static("/macp.control_plane.v1.ControlPlane/ListRunEvents"),
            DynamicCodec {
                output: pool
                    .get_message_by_name("macp.control_plane.v1.ListRunEventsResponse")
                    .expect("response type"),
            },
        )
        .await
        .expect("ListRunEvents through reflection")
        .into_inner();
    let events = to_json(&events);
    assert_eq!(events["data"].as_array().map(Vec::len), Some(types.len()));
    app.stop().await;
}
