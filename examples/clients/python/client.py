"""Starts a run on the control plane over gRPC, waits for its end in the same call
(`RunStart` with `await_result`) and prints how it ended: one JSON line with the run id, status,
the terminal event's seq, the decision and the runtime's signed decision receipt (`GetRunReceipt`;
null when the runtime signs none).

    python3 client.py 127.0.0.1:3001 ../../seed-decision.json [--timeout-ms 60000] [--token KEY]

Stubs come from generate.py (grpcio-tools), regenerated on each start.
"""

import argparse
import json
import sys

import generate

sys.path.insert(0, str(generate.generate()))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from macp_cp_client.v1 import control_plane_pb2 as pb  # noqa: E402
from macp_cp_client.v1 import control_plane_pb2_grpc as pb_grpc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the control plane's gRPC address, host:port")
    parser.add_argument("request", help="an ExecutionRequest as JSON")
    parser.add_argument("--timeout-ms", type=int, default=60_000)
    parser.add_argument("--token", help="an API key or JWT, when auth is on")
    args = parser.parse_args()

    with open(args.request, encoding="utf-8") as file:
        request = json_format.ParseDict(json.load(file), pb.ExecutionRequest())
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.address) as channel:
        client = pb_grpc.ControlPlaneStub(channel)
        try:
            started = client.RunStart(
                pb.RunStartRequest(
                    request=request, await_result=True, await_timeout_ms=args.timeout_ms
                ),
                metadata=metadata,
            )
            receipt = run_receipt(client, started.run_id, metadata)
        except grpc.RpcError as error:
            print(f"refused: {error.code().name} {error_code(error)}: {error.details()}",
                  file=sys.stderr)
            return 1
    result = started.result
    decision = (
        json_format.MessageToDict(result.decision) if result.HasField("decision") else None
    )
    print(json.dumps({
        "runId": started.run_id,
        "status": result.run.status,
        "terminalSeq": result.terminal_seq,
        "decision": decision,
        "receipt": receipt,
    }))
    return 0


def error_code(error: grpc.RpcError) -> str:
    """The control plane's stable error code of a refusal."""
    return dict(error.trailing_metadata() or ()).get("x-error-code", "")


def run_receipt(client, run_id: str, metadata) -> dict | None:
    """The run's decision receipt (issuer, keyId, algorithm, signature, the document itself in
    receiptJson), or None when it has none: RECEIPT_NOT_FOUND, as from a runtime that does not
    sign receipts or a session that did not resolve."""
    try:
        receipt = client.GetRunReceipt(pb.GetRunReceiptRequest(run_id=run_id), metadata=metadata)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND and error_code(error) == "RECEIPT_NOT_FOUND":
            return None
        raise
    return json_format.MessageToDict(receipt)


if __name__ == "__main__":
    sys.exit(main())
