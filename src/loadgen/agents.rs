//! The agents' side: MACP envelopes sent to the runtime over gRPC, as an SDK agent sends them
//! (each with its own sender's bearer; in the runtime's dev mode the bearer is the identity).
//! Payloads are the MACP protos, encoded with prost.

use std::time::Duration;

use macp_runtime::decision_pb::{EvaluationPayload, ProposalPayload, VotePayload};
use macp_runtime::pb::macp_runtime_service_client::MacpRuntimeServiceClient;
use macp_runtime::pb::{CommitmentPayload, Envelope, SendRequest, SessionStartPayload};
use prost::Message as _;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::Error;

pub const MODE: &str = "macp.mode.decision.v1";
const MODE_VERSION: &str = "1.0.0";
const CONFIGURATION_VERSION: &str = "config.default";
pub const INITIATOR: &str = "loadgen-coordinator";
pub const PARTICIPANTS: [&str; 3] = ["loadgen-fraud", "loadgen-risk", "loadgen-growth"];
/// Long enough that no session expires under load; every session ends with its Commitment.
const SESSION_TTL_MS: i64 = 600_000;
/// A Send that takes longer than this counts as an error (the runtime is overloaded or gone).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions per runtime connection: the reference runtime binary serves 64 requests at once
/// per connection by default (MACP_CONCURRENCY_LIMIT_PER_CONNECTION), and each session has at
/// most one Send in flight.
pub const SESSIONS_PER_CONNECTION: usize = 32;

/// One envelope to send.
pub struct Outgoing {
    pub sender: &'static str,
    pub message_type: &'static str,
    pub payload: Vec<u8>,
}

/// What became of one Send.
pub enum Sent {
    /// Accepted; `at` is when the Ack arrived.
    Accepted { at: Instant, took: Duration },
    /// The runtime answered with a negative Ack.
    Rejected(String),
    /// No Ack: the call failed or timed out.
    Failed(String),
}

#[derive(Clone)]
pub struct Runtime {
    client: MacpRuntimeServiceClient<Channel>,
}

impl Runtime {
    /// Connects eagerly, so an unreachable runtime is reported before any load is offered.
    pub async fn connect(address: &str) -> Result<Runtime, Error> {
        let url = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let invalid = |message: String| Error::Argument(format!("--runtime {url}: {message}"));
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| invalid(error.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(SEND_TIMEOUT)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| invalid(error.to_string()))?;
        }
        let channel = endpoint.connect().await.map_err(|error| {
            Error::Unreachable(format!("runtime at {url}: {}", super::chain(&error)))
        })?;
        Ok(Runtime {
            client: MacpRuntimeServiceClient::new(channel),
        })
    }

    /// Sends one envelope of `session_id` with a fresh message id.
    pub async fn send(&self, session_id: &str, message_id: &str, outgoing: Outgoing) -> Sent {
        let mut request = tonic::Request::new(SendRequest {
            envelope: Some(Envelope {
                macp_version: "1.0".into(),
                mode: MODE.into(),
                message_type: outgoing.message_type.into(),
                message_id: message_id.into(),
                session_id: session_id.into(),
                // The runtime sets the sender from the authenticated identity.
                sender: String::new(),
                timestamp_unix_ms: chrono::Utc::now().timestamp_millis(),
                payload: outgoing.payload,
            }),
        });
        match format!("Bearer {}", outgoing.sender).parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => return Sent::Failed("sender is not a header value".into()),
        }
        let sent = Instant::now();
        match self.client.clone().send(request).await {
            Ok(response) => {
                let at = Instant::now();
                match response.into_inner().ack {
                    Some(ack) if ack.ok => Sent::Accepted {
                        at,
                        took: at - sent,
                    },
                    Some(ack) => Sent::Rejected(
                        ack.error
                            .map(|error| format!("{}: {}", error.code, error.message))
                            .unwrap_or_else(|| "negative ack without an error".into()),
                    ),
                    None => Sent::Rejected("no ack in the response".into()),
                }
            }
            Err(status) => Sent::Failed(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// The initiator opens a decision session among the three participants.
pub fn session_start() -> Outgoing {
    Outgoing {
        sender: INITIATOR,
        message_type: "SessionStart",
        payload: SessionStartPayload {
            intent: "loadgen: agents decide".into(),
            participants: PARTICIPANTS.iter().map(|id| (*id).to_owned()).collect(),
            mode_version: MODE_VERSION.into(),
            configuration_version: CONFIGURATION_VERSION.into(),
            policy_version: String::new(),
            ttl_ms: SESSION_TTL_MS,
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

/// Message `index` of `count` between SessionStart and Commitment: a Proposal first (the
/// decision mode refuses anything about an unknown proposal), then Evaluations of the latest
/// proposal with a new Proposal every tenth message, each from the participants in turn, and
/// when there is room a Vote from each participant last (votes end the proposal phase).
pub fn message(index: usize, count: usize) -> Outgoing {
    let sender = PARTICIPANTS[index % PARTICIPANTS.len()];
    let votes = PARTICIPANTS.len().min(count.saturating_sub(1));
    if index > 0 && index >= count - votes {
        let voter = PARTICIPANTS[index - (count - votes)];
        return Outgoing {
            sender: voter,
            message_type: "Vote",
            payload: VotePayload {
                proposal_id: "p-0".into(),
                vote: "APPROVE".into(),
                reason: format!("{voter} approves"),
            }
            .encode_to_vec(),
        };
    }
    if index.is_multiple_of(10) {
        return Outgoing {
            sender,
            message_type: "Proposal",
            payload: ProposalPayload {
                proposal_id: format!("p-{index}"),
                option: format!("option {index}"),
                rationale: "loadgen".into(),
                supporting_data: Vec::new(),
            }
            .encode_to_vec(),
        };
    }
    Outgoing {
        sender,
        message_type: "Evaluation",
        payload: EvaluationPayload {
            proposal_id: format!("p-{}", index / 10 * 10),
            recommendation: "APPROVE".into(),
            confidence: 0.8,
            reason: format!("evaluation {index}"),
        }
        .encode_to_vec(),
    }
}

/// The initiator's Commitment, which resolves the session.
pub fn commitment() -> Outgoing {
    Outgoing {
        sender: INITIATOR,
        message_type: "Commitment",
        payload: CommitmentPayload {
            commitment_id: "c1".into(),
            action: "decision.selected".into(),
            authority_scope: "loadgen".into(),
            reason: "loadgen ends the session".into(),
            mode_version: MODE_VERSION.into(),
            policy_version: String::new(),
            configuration_version: CONFIGURATION_VERSION.into(),
            outcome_positive: true,
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(count: usize) -> Vec<(&'static str, &'static str)> {
        (0..count)
            .map(|index| {
                let outgoing = message(index, count);
                (outgoing.message_type, outgoing.sender)
            })
            .collect()
    }

    #[test]
    fn a_session_proposes_first_and_votes_last_once_each() {
        assert_eq!(plan(1), [("Proposal", PARTICIPANTS[0])]);
        assert_eq!(
            plan(2),
            [("Proposal", PARTICIPANTS[0]), ("Vote", PARTICIPANTS[0])]
        );
        let long = plan(25);
        assert_eq!(long[0].0, "Proposal");
        assert_eq!(long[10].0, "Proposal");
        assert_eq!(long[11].0, "Evaluation");
        let votes: Vec<_> = long[22..]
            .iter()
            .map(|(kind, sender)| (*kind, *sender))
            .collect();
        assert_eq!(
            votes,
            PARTICIPANTS.map(|sender| ("Vote", sender)).to_vec(),
            "each participant votes once, last"
        );
        assert!(long[..22].iter().all(|(kind, _)| *kind != "Vote"));
    }
}
