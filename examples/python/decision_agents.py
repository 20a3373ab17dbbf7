"""Four agents on the public MACP Python SDK finish one Decision-mode session.

The coordinator starts the session (it is its initiator), fraud-agent proposes,
risk-agent and growth-agent evaluate, all three vote, and the coordinator commits.
Each agent has its own MacpClient whose credential is its own id: the runtime's
dev mode (the one `macp-control-plane serve` embeds on loopback) takes the bearer
value as the sender. The control plane is not called at all: it discovers the
session on the runtime and shows it as a run whose id is the session id.

    python decision_agents.py --runtime 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from macp_sdk import MODE_DECISION, AuthConfig, MacpClient, RetryPolicy, new_session_id
from macp_sdk.agent import (
    GrpcTransportAdapter,
    HandlerContext,
    IncomingMessage,
    InitiatorConfig,
    Participant,
)

COORDINATOR = "coordinator"
PROPOSER = "fraud-agent"
EVALUATORS = {
    # agent id -> (recommendation, confidence, reason)
    "risk-agent": ("APPROVE", 0.9, "risk acceptable with step-up"),
    "growth-agent": ("REVIEW", 0.6, "step-up adds friction for a good customer"),
}
PARTICIPANTS = [PROPOSER, *EVALUATORS]
PROPOSAL_ID = "p1"


def make_agent(
    agent_id: str, session_id: str, runtime: str, initiator: InitiatorConfig | None = None
) -> Participant:
    """An SDK Participant with its own connection and its own identity."""
    auth = AuthConfig.for_dev_agent(agent_id)  # authorization: Bearer <agent_id>
    client = MacpClient(target=runtime, allow_insecure=True, auth=auth, default_timeout=10)
    return Participant(
        participant_id=agent_id,
        session_id=session_id,
        mode=MODE_DECISION,
        client=client,
        auth=auth,
        participants=PARTICIPANTS,
        initiator_config=initiator,
        # Agents may subscribe before the coordinator's SessionStart lands; the SDK
        # retries that NOT_FOUND, by default for only 0.7 s in all, here for about 5 s.
        transport=GrpcTransportAdapter(
            client, session_id, auth=auth, subscribe_retry=RetryPolicy(max_retries=6)
        ),
    )


_print_lock = threading.Lock()  # the agents run on threads of their own


def say(agent_id: str, text: str) -> None:
    with _print_lock:
        print(f"{agent_id:>12}: {text}", flush=True)


def vote_once_evaluated(agent: Participant) -> None:
    """Votes once every evaluator has evaluated: the first Vote closes the
    evaluation phase, so voting earlier would make a late Evaluation fail."""
    voted = False

    def on_evaluation(_msg: IncomingMessage, ctx: HandlerContext) -> None:
        nonlocal voted
        evaluated = {e.sender for e in ctx.projection.evaluations}
        if voted or not evaluated >= set(EVALUATORS):
            return
        voted = True
        ctx.actions.vote(PROPOSAL_ID, "APPROVE", reason="step-up verification is proportionate")
        say(ctx.participant, f"voted APPROVE on {PROPOSAL_ID}")

    agent.on("Evaluation", on_evaluation)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="127.0.0.1:50051", help="MACP runtime gRPC address")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the decision"
    )
    args = parser.parse_args()

    session_id = new_session_id()  # a UUID, so the control plane's run id is the same
    outcome: dict[str, object] = {}

    # coordinator: opens the session, commits once all participants have voted.
    coordinator = make_agent(
        COORDINATOR,
        session_id,
        args.runtime,
        InitiatorConfig(
            intent="approve a high-value transfer from a new device?",
            participants=PARTICIPANTS,
            ttl_ms=60_000,
        ),
    )

    def on_vote(_msg: IncomingMessage, ctx: HandlerContext) -> None:
        votes = ctx.projection.votes.get(PROPOSAL_ID, {})
        if len(votes) < len(PARTICIPANTS) or "committed" in outcome:
            return
        outcome["committed"] = True
        approved = ctx.projection.vote_ratio(PROPOSAL_ID) > 0.5
        ctx.actions.commit(
            "decision.selected" if approved else "decision.rejected",
            "payments.fraud",
            reason=f"{len(votes)} votes on {PROPOSAL_ID}",
            outcome_positive=approved,
        )
        say(ctx.participant, f"committed ({'approved' if approved else 'rejected'})")

    coordinator.on("Vote", on_vote)
    coordinator.on_terminal(lambda result: outcome.update(state=result.state))

    # fraud-agent: proposes as soon as the session exists, then votes.
    proposer = make_agent(PROPOSER, session_id, args.runtime)

    def on_start(_msg: IncomingMessage, ctx: HandlerContext) -> None:
        ctx.actions.propose(
            PROPOSAL_ID, "step-up-verification", rationale="new device + high value"
        )
        say(ctx.participant, f"proposed {PROPOSAL_ID}: step-up-verification")

    proposer.on("SessionStart", on_start)
    vote_once_evaluated(proposer)

    # risk-agent, growth-agent: evaluate the proposal, then vote.
    evaluators = []
    for agent_id, (recommendation, confidence, reason) in EVALUATORS.items():
        agent = make_agent(agent_id, session_id, args.runtime)

        def on_proposal(
            msg: IncomingMessage,
            ctx: HandlerContext,
            recommendation: str = recommendation,
            confidence: float = confidence,
            reason: str = reason,
        ) -> None:
            ctx.actions.evaluate(
                msg.proposal_id or PROPOSAL_ID, recommendation, confidence=confidence, reason=reason
            )
            say(ctx.participant, f"evaluated {msg.proposal_id}: {recommendation}")

        agent.on("Proposal", on_proposal)
        vote_once_evaluated(agent)
        evaluators.append(agent)

    # All start at once, as separately spawned agents would: one that subscribes
    # before the SessionStart has landed retries (see make_agent).
    agents = [coordinator, proposer, *evaluators]
    threads = [threading.Thread(target=a.run, name=a.participant_id, daemon=True) for a in agents]
    say(COORDINATOR, f"starting session {session_id} on {args.runtime}")
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        for agent in agents:
            agent.stop()  # a session that ends uncommitted leaves the stream quiet
        print(f"no decision within {args.timeout}s (session {session_id})", file=sys.stderr)
        return 1
    if outcome.get("state") != "Committed":
        print(f"session {session_id} ended without a decision", file=sys.stderr)
        return 1

    say(COORDINATOR, "decision committed; the control plane shows it as run:")
    print(session_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
