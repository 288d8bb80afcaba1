"""The generated code matches protos/, and the protos follow the style the contract promises."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
GENERATED_DIR = ROOT / "client" / "gradserve_client" / "proto"
PROTO_ROOT = ROOT / "protos"
PROTO_FILES = sorted((PROTO_ROOT / "gradserve" / "v1").glob("*.proto"))


def _load_gen_script():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The protos compiled with their comments (source info)."""
    out = Path(__import__("tempfile").mkdtemp()) / "set.pb"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={resources.files('grpc_tools') / '_proto'}",
        f"--descriptor_set_out={out}",
        "--include_source_info",
        *(str(p.relative_to(PROTO_ROOT)) for p in PROTO_FILES),
    ]
    assert protoc.main(args) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_generated_code_has_not_drifted(tmp_path: Path) -> None:
    gen = _load_gen_script()
    gen.generate(tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir() if gen.is_generated(p)}
    committed = {p.name: p.read_text() for p in GENERATED_DIR.iterdir() if gen.is_generated(p)}
    assert sorted(committed) == sorted(fresh), "run `make protos` and commit the result"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"generated code differs from protos/ in {stale}: run `make protos`"


def test_the_floor_never_imports_the_server_package() -> None:
    code = (
        "import sys\n"
        "from gradserve_client.proto import gradient_service_pb2, gradient_service_pb2_grpc\n"
        "from gradserve_client.proto import graph_pb2, tensor_pb2, training_pb2, tensor_codec\n"
        "from gradserve_client import opset\n"
        "from gradserve_client.opset import listing\n"
        "import gradserve_client.onnx\n"
        "assert not any(m == 'gradserve' or m.startswith('gradserve.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# The server stands on the floor of gradserve_client only: the wire code and its codecs (a
# dataset's content id too), the opset and the ONNX converter.
FLOOR = ("gradserve_client.proto", "gradserve_client.opset", "gradserve_client.onnx")


def _client_imports(path: Path) -> set[str]:
    import ast

    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return {m for m in modules if m == "gradserve_client" or m.startswith("gradserve_client.")}


def test_the_server_imports_only_the_floor_of_the_client() -> None:
    service = ROOT / "service" / "gradserve"
    stray = []
    for path in sorted(service.rglob("*.py")):
        where = str(path.relative_to(service))
        for module in _client_imports(path):
            floor = any(module == f or module.startswith(f + ".") for f in FLOOR)
            if not floor:
                stray.append(f"{where}: {module}")
    assert not stray, stray
    core = service / "autodiff"
    for path in core.rglob("*.py"):  # the core knows nothing of protobuf
        assert all(m.startswith("gradserve_client.opset") for m in _client_imports(path)), path


def test_the_onnx_converter_stands_on_the_wire_code_alone() -> None:
    """gradserve_client.onnx imports the generated code and the codecs of the floor (`proto`),
    and nothing else of gradserve_client or gradserve."""
    package = ROOT / "client" / "gradserve_client" / "onnx"
    for path in package.glob("*.py"):
        for module in _client_imports(path):
            assert module.startswith("gradserve_client.proto"), (path.name, module)
        relative = _relative_imports(path)
        assert all(
            level == 1 or (level == 2 and module.split(".")[0] == "proto")
            for level, module in relative
        ), (path.name, relative)


def _relative_imports(path: Path) -> set[tuple[int, str | None]]:
    import ast

    return {
        (node.level, node.module)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level
    }


def test_message_classes_live_in_the_client_package() -> None:
    import pickle

    from gradserve_client.proto import gradient_service_pb2

    request = gradient_service_pb2.EvaluateRequest(graph_id="abc", outputs=["y"])
    assert type(request).__module__ == "gradserve_client.proto.gradient_service_pb2"
    assert pickle.loads(pickle.dumps(request)) == request


def test_service_has_the_contract_rpcs() -> None:
    from gradserve_client.proto import gradient_service_pb2

    service = gradient_service_pb2.DESCRIPTOR.services_by_name["Gradient"]
    assert service.full_name == "gradserve.v1.Gradient"
    kinds = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert kinds == {
        "Evaluate": (False, False),
        "Jacobian": (False, False),
        "StreamJacobian": (False, True),
        "Vjp": (False, False),
        "Jvp": (False, False),
        "Train": (False, True),
        "PutDataset": (True, False),
        "ListOperators": (False, False),
        "GetServerInfo": (False, False),
        "Hessian": (False, False),
        "Hvp": (False, False),
        "JacobianSparsity": (False, False),
        "DerivativeProgram": (False, False),
        "StreamHessian": (False, True),
    }


def _enums(file: descriptor_pb2.FileDescriptorProto):
    yield from file.enum_type
    stack = list(file.message_type)
    while stack:
        message = stack.pop()
        yield from message.enum_type
        stack.extend(message.nested_type)


def test_enum_values_are_prefixed_and_zero_is_unspecified(descriptor_set) -> None:
    for file in descriptor_set.file:
        assert file.package == "gradserve.v1"
        assert file.name.startswith("gradserve/v1/")
        for enum in _enums(file):
            # The prefix is the enum's name in upper case; the underscores between its words
            # are optional, as the contract spells DType's values DTYPE_*.
            prefix = enum.name.upper()
            zero = [v for v in enum.value if v.number == 0]
            assert zero and zero[0].name.endswith("_UNSPECIFIED"), enum.name
            for value in enum.value:
                assert value.name.isupper(), f"{enum.name}.{value.name}"
                assert value.name.replace("_", "").startswith(prefix), f"{enum.name}.{value.name}"
            assert zero[0].name.replace("_", "") == prefix + "UNSPECIFIED", enum.name


def test_every_element_is_documented(descriptor_set) -> None:
    # Comments are the API docs for other-language clients: every message, field, enum, enum
    # value, service and RPC has a leading comment.
    missing = []
    for file in descriptor_set.file:
        documented = {
            tuple(loc.path)
            for loc in file.source_code_info.location
            if loc.leading_comments.strip()
        }

        def check(path: tuple[int, ...], what: str) -> None:
            if path not in documented:  # noqa: B023
                missing.append(f"{file.name}: {what}")  # noqa: B023

        def walk_message(msg, path: tuple[int, ...], prefix: str) -> None:
            check(path, prefix + msg.name)
            for i, field in enumerate(msg.field):
                check((*path, 2, i), f"{prefix}{msg.name}.{field.name}")
            for i, nested in enumerate(msg.nested_type):
                if not nested.options.map_entry:
                    walk_message(nested, (*path, 3, i), f"{prefix}{msg.name}.")
            for i, enum in enumerate(msg.enum_type):
                walk_enum(enum, (*path, 4, i), f"{prefix}{msg.name}.")

        def walk_enum(enum, path: tuple[int, ...], prefix: str) -> None:
            check(path, prefix + enum.name)
            for i, value in enumerate(enum.value):
                check((*path, 2, i), f"{prefix}{enum.name}.{value.name}")

        for i, msg in enumerate(file.message_type):
            walk_message(msg, (4, i), "")
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, (5, i), "")
        for i, service in enumerate(file.service):
            check((6, i), service.name)
            for j, method in enumerate(service.method):
                check((6, i, 2, j), f"{service.name}.{method.name}")
    assert not missing, "undocumented: " + ", ".join(missing)


def test_jacobian_block_structures_use_the_reserved_numbers(descriptor_set) -> None:
    file = next(f for f in descriptor_set.file if f.name.endswith("gradient_service.proto"))
    block = next(m for m in file.message_type if m.name == "JacobianBlock")
    assert [o.name for o in block.oneof_decl] == ["structure"]
    members = {f.name: f.number for f in block.field if f.HasField("oneof_index")}
    assert members == {"dense": 4, "diagonal": 5, "sparse": 6}
    assert any(r.start <= 7 and r.end > 9 for r in block.reserved_range)  # room for more
