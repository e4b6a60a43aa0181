"""The gRPC modules generated from `bidding/proto/campaign/bidding/v1/bidding.proto`.

Generated code is not committed. `load()` runs grpc_tools' protoc when the generated modules
are missing or stale, then imports them. A stamp file beside them records the .proto's sha256
and the protoc and protobuf versions that produced them; any difference regenerates, so an
edited .proto or an upgraded grpcio-tools never serves old stubs. This works the same in a
clean clone, under `pip install -e .` (the tree is the package) and in a regular install, as
long as the package directory is writable the first time; an image whose site-packages is
read-only generates them while it is built, with `python -m bidding.grpc_stubs`.

protoc runs with the directory holding `bidding/` as its include root, so the generated
modules live in the package (`bidding.proto.campaign.bidding.v1.bidding_pb2`) and import each
other by that absolute name; the proto package, which clients see, stays
`campaign.bidding.v1`. Files are written to a temporary directory and renamed into place, so a
process importing them while another regenerates never reads half a file.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PROTO = Path(__file__).resolve().parent / "proto" / "campaign" / "bidding" / "v1" / "bidding.proto"
MODULE = "bidding.proto.campaign.bidding.v1.bidding_pb2"
GENERATED = ("bidding_pb2.py", "bidding_pb2_grpc.py")
STAMP = PROTO.with_name("bidding_pb2.stamp")


class StubsError(Exception):
    """protoc failed, or the package directory cannot hold the generated modules."""


def _fingerprint() -> str:
    return "\n".join((hashlib.sha256(PROTO.read_bytes()).hexdigest(),
                      f"grpcio-tools {version('grpcio-tools')}",
                      f"protobuf {version('protobuf')}", ""))


def is_current() -> bool:
    try:
        return STAMP.read_text() == _fingerprint() and all(
            (PROTO.parent / name).exists() for name in GENERATED)
    except OSError:
        return False


def generate() -> None:
    """Run protoc into a temporary directory beside the .proto, then rename into place."""
    from grpc_tools import protoc  # heavy, and only needed when the stubs are stale

    relative = PROTO.relative_to(PACKAGE_ROOT)
    try:
        work = Path(tempfile.mkdtemp(prefix=".protoc-", dir=PROTO.parent))
    except OSError as error:
        raise StubsError(f"cannot write the gRPC stubs beside {relative}: {error}; generate "
                         "them at build time with `python -m bidding.grpc_stubs`") from error
    try:
        status = protoc.main(["grpc_tools.protoc", f"-I{PACKAGE_ROOT}", f"--python_out={work}",
                              f"--grpc_python_out={work}", str(PROTO)])
        if status != 0:
            raise StubsError(f"protoc failed on {relative} (exit status {status})")
        for name in GENERATED:
            (work / relative.parent / name).replace(PROTO.parent / name)
        stamp = work / STAMP.name
        stamp.write_text(_fingerprint())
        stamp.replace(STAMP)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load() -> tuple[ModuleType, ModuleType]:
    """The message module and the service module, generating them first when stale."""
    if not is_current():
        generate()
        for name in (MODULE, f"{MODULE}_grpc"):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
    return importlib.import_module(MODULE), importlib.import_module(f"{MODULE}_grpc")


if __name__ == "__main__":
    generate()
    load()
    print(f"generated the gRPC stubs for {PROTO.relative_to(PACKAGE_ROOT)}")
