"""Regenerate the Python code for protos/gradserve/v1/*.proto into gradserve_client/proto/.

Run with `make protos` (or `python scripts/gen_protos.py [--out DIR]`). The output is
committed; tests/unit/test_protos.py regenerates into a temporary directory and fails when the
committed code has drifted from the .proto files.

Why a post-processing step rather than protoletariat: protoc writes absolute imports such as
`from gradserve.v1 import tensor_pb2`, which would resolve to the *server* package `gradserve`.
We flatten gradserve/v1/*_pb2*.py into one directory, so the fix is a single, anchored regex
(`from gradserve.v1 import X` -> `from . import X`) over a handful of files. That is easier to
audit than a dependency with its own protoc plugin and release cycle, and it keeps `make protos`
down to grpcio-tools alone.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_PACKAGE = "gradserve/v1"
DEFAULT_OUT = ROOT / "client" / "gradserve_client" / "proto"

# Suffixes of the files protoc writes for `x.proto`; everything else in the output directory
# (the hand-written __init__.py and tensor_codec.py) is left alone.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_ABSOLUTE_IMPORT = re.compile(r"^from gradserve\.v1 import ", re.MULTILINE)
_ANY_IMPORT_OF_GRADSERVE = re.compile(r"^\s*(from|import)\s+gradserve\b", re.MULTILINE)
# The module name protoc gives the message classes (their __module__): make it the real one, so
# that pickling a message finds its class.
_MODULE_NAME = re.compile(r"'gradserve\.v1\.(\w+_pb2)'")
PYTHON_PACKAGE = "gradserve_client.proto"


def proto_files() -> list[Path]:
    """The .proto files of the contract, sorted for a deterministic protoc invocation."""
    return sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def is_generated(path: Path) -> bool:
    """Whether `path` is a file that this script writes."""
    return path.name.endswith(GENERATED_SUFFIXES)


def generate(out: Path) -> list[Path]:
    """Generate the modules into `out` (flat, with relative imports); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for stale in out.iterdir():
            if is_generated(stale):
                stale.unlink()
        written = []
        for src in sorted((Path(tmp) / PROTO_PACKAGE).iterdir()):
            if not is_generated(src):
                continue
            text = src.read_text()
            if src.name.endswith("_grpc.py") and "class " not in text:
                continue  # a .proto without services: protoc writes an empty stub module
            text = _ABSOLUTE_IMPORT.sub("from . import ", text)
            text = _MODULE_NAME.sub(rf"'{PYTHON_PACKAGE}.\1'", text)
            if _ANY_IMPORT_OF_GRADSERVE.search(text):
                # Any other form of absolute import would silently bind to the server package.
                raise SystemExit(f"{src.name}: an absolute import of gradserve is left")
            dest = out / src.name
            dest.write_text(text)
            written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
