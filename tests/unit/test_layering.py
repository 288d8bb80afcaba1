"""The server's modules import one way (design section 2): no cycles above the core, no
private names across rpc modules, LocalClient through the core and the server's one in-process
entry point only (test_protos.py checks that the server stands on the SDK's floor alone).
Read from the sources: every import, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
CLIENT = ROOT / "client"


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules ``path`` imports at run time (``from p import m`` is module ``p.m`` when
    that is a module), type-checking-only imports left out."""
    found: set[str] = set()
    package = _module_name(path, SERVICE if path.is_relative_to(SERVICE) else CLIENT)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    head = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{head}.{base}" if base else head
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _server_graph() -> dict[str, set[str]]:
    """The imports between the server's modules above the core: rpc/ and the process."""
    core = ("gradserve.autodiff", "gradserve.training")
    paths = {_module_name(p, SERVICE): p for p in (SERVICE / "gradserve").rglob("*.py")}
    paths = {name: p for name, p in paths.items() if not name.startswith(core)}
    names = set(paths)
    return {name: imports(path, names) & names for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None. A module importing its own package's
    ``__init__`` is not counted: ``from gradserve.rpc.x import y`` runs it first anyway."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if node.startswith(dep + "."):
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := walk(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_the_server_modules_have_no_import_cycle() -> None:
    graph = _server_graph()
    assert "gradserve.rpc.requests" in graph["gradserve.rpc.training"]  # the graph is read
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "p.x": {"p"}, "p": {"p.x"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"p.x": {"p"}, "p": {"p.x"}}) is None


def _server_side(path: Path) -> set[str]:
    return {m for m in imports(path, set()) if m.split(".")[0] == "gradserve"}


def test_local_client_uses_the_core_and_the_in_process_entry_point_only() -> None:
    path = CLIENT / "gradserve_client" / "local.py"
    assert _server_side(path) == {"gradserve.autodiff", "gradserve.rpc.inprocess"}
    # the rest of the SDK (the methods' local computations, in _methods.py) as well
    for path in (CLIENT / "gradserve_client").rglob("*.py"):
        for module in _server_side(path):
            core = module == "gradserve.autodiff" or module.startswith("gradserve.autodiff.")
            assert core or module == "gradserve.rpc.inprocess", (path.name, module)


def test_no_module_of_rpc_reads_another_ones_private_names() -> None:
    for path in (SERVICE / "gradserve" / "rpc").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "servicer"
            ):
                assert not node.attr.startswith("_"), (path.name, node.attr)


def test_the_metrics_interceptor_names_no_method() -> None:
    source = (SERVICE / "gradserve" / "rpc" / "interceptors.py").read_text()
    assert "/gradserve.v1.Gradient/" not in source


def test_cancel_is_defined_once_in_ir_and_imported_from_there() -> None:
    # Low-level modules took Cancel from api.py (the top-level API) and Cancelled from executor.
    definitions, elsewhere = [], []
    for path in sorted((SERVICE / "gradserve").rglob("*.py")):
        name = _module_name(path, SERVICE)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "Cancel" for t in targets):
                    definitions.append(name)
            # (the package itself re-exports ir's Cancelled as public API)
            public = ("gradserve.autodiff.ir", "gradserve.autodiff")
            if isinstance(node, ast.ImportFrom) and node.module not in public:
                for alias in node.names:
                    if alias.name in ("Cancel", "Cancelled", "check_cancel"):
                        elsewhere.append((name, node.module, alias.name))
    assert definitions == ["gradserve.autodiff.ir"]
    assert elsewhere == [], elsewhere
