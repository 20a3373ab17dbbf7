"""Generates the gRPC client of the control plane from its protos (control_plane_proto/) with
grpcio-tools, under the package `macp_cp_client`: stubs generated as `macp/control_plane/...`
would be shadowed by the public MACP SDK's regular package `macp`. The protos' package
(`macp.control_plane.v1`, what goes on the wire) is unchanged; only the Python path moves.

    python3 generate.py          # writes ./generated/macp_cp_client/v1/*_pb2*.py
                                 # (MACP_CP_CLIENT_OUT: elsewhere)
"""

import os
import pathlib
import shutil
import sys
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTOS = HERE.parents[2] / "control_plane_proto" / "macp" / "control_plane" / "v1"
OUT = pathlib.Path(os.environ.get("MACP_CP_CLIENT_OUT", HERE / "generated"))
PACKAGE = "macp_cp_client/v1"


def generate() -> pathlib.Path:
    """Regenerates the stubs; returns the directory to put on sys.path."""
    with tempfile.TemporaryDirectory() as staging:
        target = pathlib.Path(staging) / PACKAGE
        target.mkdir(parents=True)
        for proto in sorted(PROTOS.glob("*.proto")):
            text = proto.read_text().replace('import "macp/control_plane/v1/', f'import "{PACKAGE}/')
            (target / proto.name).write_text(text)
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir()
        well_known = pathlib.Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{staging}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            *(f"{PACKAGE}/{proto.name}" for proto in sorted(target.glob("*.proto"))),
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
    for package in (OUT / "macp_cp_client", OUT / PACKAGE):
        (package / "__init__.py").touch()
    return OUT


if __name__ == "__main__":
    print(generate())
