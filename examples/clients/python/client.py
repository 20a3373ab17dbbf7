"""Starts a run on the control plane over gRPC, waits for its end in the same call
(`RunStart` with `await_result`) and prints how it ended: one JSON line with the run id, status,
the terminal event's seq and the decision.

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
        except grpc.RpcError as error:
            codes = dict(error.trailing_metadata() or ())
            print(f"refused: {error.code().name} {codes.get('x-error-code', '')}: {error.details()}",
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
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
