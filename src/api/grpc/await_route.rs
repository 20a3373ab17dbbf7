//! `AwaitRun` over gRPC, answered from one encoding per ended run. The waiters of a run share its
//! outcome (`runs::outcome`); turning that outcome into a `RunResult` and encoding it again for
//! each of them was most of the cost of a thousand answers: the run's metadata holds its whole
//! request as a nested `Struct`, and prost measures nested messages once per level. Converted
//! (8–15 µs), encoded (10 µs) and dropped (3 µs) per waiter, against a copy of shared bytes
//! here (`benches/await.rs`). [`WithAwaitRoute`] puts it in front of the generated service on the
//! one gRPC mount; `ControlPlane::await_run` gives the same answer, converted per call.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use prost::Message as _;
use tonic::server::{Grpc, NamedService as _, UnaryService};
use tonic::{Request, Response, Status};

use super::{ControlPlaneApi, proto, result_message};
use crate::api::proto::control_plane_server::ControlPlaneServer;
use crate::runs::RunService;
use crate::runs::outcome::RunOutcome;

/// A message whose encoding is already known: written as it is, never decoded.
#[derive(Debug, Clone, Default)]
pub struct Encoded(Bytes);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Run id → the encoding of the outcome its waiters share now. The outcome is held weakly: an
/// entry whose outcome is gone is replaced, and its allocation (so its address, the key's
/// check) is not reused while the entry holds it.
type Encodings = Mutex<HashMap<String, (Weak<RunOutcome>, Bytes)>>;

/// `AwaitRun`, answered from shared encodings.
#[derive(Clone)]
pub struct AwaitRunRoute {
    service: RunService,
    encodings: Arc<Encodings>,
    max_decoding_message_size: usize,
    max_encoding_message_size: usize,
}

impl AwaitRunRoute {
    pub fn new(
        service: RunService,
        max_decoding_message_size: usize,
        max_encoding_message_size: usize,
    ) -> Self {
        AwaitRunRoute {
            service,
            encodings: Arc::default(),
            max_decoding_message_size,
            max_encoding_message_size,
        }
    }

    /// The outcome's encoding: made by its first waiter, shared by the others.
    fn encoding(&self, outcome: &Arc<RunOutcome>) -> Result<Bytes, Status> {
        let lock = || {
            self.encodings
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if let Some((held, bytes)) = lock().get(&outcome.run.id)
            && std::ptr::eq(held.as_ptr(), Arc::as_ptr(outcome))
        {
            return Ok(bytes.clone());
        }
        let bytes = Bytes::from(result_message(outcome)?.encode_to_vec());
        let mut encodings = lock();
        encodings.retain(|_, (held, _)| held.strong_count() > 0);
        encodings.insert(
            outcome.run.id.clone(),
            (Arc::downgrade(outcome), bytes.clone()),
        );
        Ok(bytes)
    }
}

impl UnaryService<proto::AwaitRunRequest> for AwaitRunRoute {
    type Response = Encoded;
    type Future = BoxFuture<'static, Result<Response<Encoded>, Status>>;

    fn call(&mut self, request: Request<proto::AwaitRunRequest>) -> Self::Future {
        let route = self.clone();
        Box::pin(async move {
            let outcome = super::await_outcome(&route.service, request.into_inner()).await?;
            Ok(Response::new(Encoded(route.encoding(&outcome)?)))
        })
    }
}

/// The `ControlPlane` service with `AwaitRun` answered by [`AwaitRunRoute`]: one mount, so the
/// edge (auth, metrics) sees the one gRPC route it knows.
#[derive(Clone)]
pub struct WithAwaitRoute<S> {
    generated: S,
    await_run: AwaitRunRoute,
}

impl<S> WithAwaitRoute<S> {
    pub fn new(generated: S, await_run: AwaitRunRoute) -> Self {
        WithAwaitRoute {
            generated,
            await_run,
        }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithAwaitRoute<S>
where
    S: tower::Service<
            axum::http::Request<B>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.generated.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.strip_prefix(ControlPlaneServer::<ControlPlaneApi>::NAME));
        if method != Some("/AwaitRun") {
            return Box::pin(self.generated.call(request));
        }
        let route = self.await_run.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Encoded, _>::default())
                .apply_max_message_size_config(
                    Some(route.max_decoding_message_size),
                    Some(route.max_encoding_message_size),
                );
            Ok(grpc.unary(route, request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_message_is_written_as_it_is() {
        let message = proto::RunDecision {
            action: "approve".into(),
            confidence: Some(0.9),
            ..Default::default()
        };
        let encoded = Encoded(Bytes::from(message.encode_to_vec()));
        assert_eq!(encoded.encoded_len(), message.encoded_len());
        let decoded = proto::RunDecision::decode(encoded.encode_to_vec().as_slice())
            .expect("the bytes are the message's");
        assert_eq!(decoded, message);
    }
}
