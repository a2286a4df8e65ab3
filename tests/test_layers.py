"""The import graph of glasspool's own modules: no cycles, and every arrow points down.

The graph is read from the source with ``ast``, so it holds every import a module makes:
at the top, inside functions (lazy imports run too), and under ``if TYPE_CHECKING:``
(marked typing-only). The implicit import of a parent package is not an edge. A module may
import its own layer and the layers below it, never one above:

    CLI          glasspool.cli, python -m glasspool
    client       Client, Timeline, the package's public names
    HTTP/1.1     headers, URLs, requests, the wire, connections, decoding, redirects
    pool         _pool.asyncio (futures, timers); _fleet beside it
    pool state   _pool.state: sans-IO policy
    foundation   keys, events, stats, errors, checks, defaults

and, on top of the order:

- the pool (``_pool/*``) imports only the pool, events, stats, errors, checks and defaults;
- ``_pool.state`` imports nothing from asyncio, ssl or socket, nor does anything it needs;
- only the CLI and ``__main__`` import the CLI.

A new module must be given a layer in ``LAYERS`` (a package's modules take the layer of the
longest prefix listed, so ``_fleet/redis.py`` is in ``_fleet``'s).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import glasspool

SRC = Path(glasspool.__file__).parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # bottom first
    (
        "foundation",
        (
            "_allocator",
            "_defaults",
            "_events",
            "_exceptions",
            "_pool.key",
            "_redact",
            "_stats",
            "_timeouts",
            "_validate",
            "_version",
        ),
    ),
    ("pool state", ("_pool", "_pool.state")),
    ("pool", ("_pool.asyncio", "_fleet")),
    (
        "HTTP/1.1",
        (
            "_auth",
            "_connect",
            "_cookies",
            "_decoders",
            "_exchange",
            "_headers",
            "_http11",
            "_proxy",
            "_redirects",
            "_request",
            "_response",
            "_retry",
            "_syntax",
            "_urls",
        ),
    ),
    ("client", ("client", "httpx", "otel", "prometheus", "timeline", "glasspool")),
    ("CLI", ("cli", "__main__")),
)

# Typing-only imports that point up, each with the reason it cannot point down.
UPWARD_FOR_TYPING = {
    ("_exceptions", "_response"): "HTTPStatusError.response and .history hold Responses",
}

POOL_MAY_IMPORT = ("_pool", "_events", "_exceptions", "_stats", "_validate", "_defaults")
NO_IO = frozenset({"asyncio", "ssl", "socket"})


@dataclass(frozen=True)
class Edge:
    source: str  # module names without the leading "glasspool."; the package is "glasspool"
    target: str
    typing_only: bool
    line: int


@dataclass(frozen=True)
class Graph:
    modules: frozenset[str]
    edges: tuple[Edge, ...]
    external: dict[str, set[tuple[str, bool]]]  # module -> {(top-level name, typing_only)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "glasspool"


def full_name(name: str) -> str:
    return "glasspool" if name == "glasspool" else f"glasspool.{name}"


def short_name(full: str) -> str:
    return "glasspool" if full == "glasspool" else full.removeprefix("glasspool.")


def typing_only_nodes(tree: ast.Module) -> set[ast.AST]:
    """The import statements inside ``if TYPE_CHECKING:`` blocks."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name == "TYPE_CHECKING":
                found.update(n for stmt in node.body for n in ast.walk(stmt))
    return found


def imported_names(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import statement may refer to (modules or their members)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = full_name(importer).split(".")
        if not is_package:
            parts.pop()
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def build_graph() -> Graph:
    paths = sorted(SRC.rglob("*.py"))
    modules = frozenset(module_name(p) for p in paths)
    full = {full_name(m) for m in modules}
    edges: list[Edge] = []
    external: dict[str, set[tuple[str, bool]]] = {m: set() for m in modules}
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        typing_nodes = typing_only_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            typing_only = node in typing_nodes
            targets = set()
            for dotted in imported_names(node, name, path.name == "__init__.py"):
                if dotted.split(".")[0] != "glasspool":
                    external[name].add((dotted.split(".")[0], typing_only))
                    continue
                while dotted not in full:  # a member: take the module that holds it
                    dotted = dotted.rpartition(".")[0]
                targets.add(short_name(dotted))
            for target in sorted(targets - {name}):
                edges.append(Edge(name, target, typing_only, node.lineno))
    return Graph(modules, tuple(edges), external)


GRAPH = build_graph()


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest listed prefix of ``module``."""
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best == -1:
        raise LookupError(module)
    return best


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def describe(edge: Edge) -> str:
    kind = " (typing only)" if edge.typing_only else ""
    return f"{edge.source}:{edge.line} imports {edge.target}{kind}"


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    assert {"_pool.state", "_headers", "_response", "client", "cli", "__main__"} <= GRAPH.modules
    edges = {(e.source, e.target, e.typing_only) for e in GRAPH.edges}
    assert ("client", "_pool.asyncio", False) in edges
    assert ("_exceptions", "_response", True) in edges
    assert ("_pool.asyncio", "_pool.state", False) in edges


def test_every_module_has_a_layer() -> None:
    missing = []
    for module in sorted(GRAPH.modules):
        try:
            layer_of(module)
        except LookupError:
            missing.append(module)
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


def find_cycle(edges: list[Edge]) -> list[str] | None:
    """One cycle of ``edges`` as a list of modules (first == last), or ``None``."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge.target)
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    runtime = [e for e in GRAPH.edges if not e.typing_only]
    cycle = find_cycle(runtime)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    upward = []
    for edge in GRAPH.edges:
        source, target = layer_of(edge.source), layer_of(edge.target)
        if target <= source:
            continue
        if edge.typing_only and (edge.source, edge.target) in UPWARD_FOR_TYPING:
            continue
        upward.append(
            f"{describe(edge)}: layer '{LAYERS[source][0]}' must not import "
            f"layer '{LAYERS[target][0]}' above it"
        )
    assert not upward, "\n".join(upward)


def test_the_typing_exceptions_are_still_needed() -> None:
    typing_edges = {(e.source, e.target) for e in GRAPH.edges if e.typing_only}
    assert set(UPWARD_FOR_TYPING) <= typing_edges


def test_the_pool_imports_no_http_module() -> None:
    wrong = [
        describe(e)
        for e in GRAPH.edges
        if under(e.source, "_pool") and not any(under(e.target, p) for p in POOL_MAY_IMPORT)
    ]
    assert not wrong, f"the pool may import only {POOL_MAY_IMPORT}:\n" + "\n".join(wrong)


def runtime_closure(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        module = todo.pop()
        for edge in GRAPH.edges:
            if edge.source == module and not edge.typing_only and edge.target not in seen:
                seen.add(edge.target)
                todo.append(edge.target)
    return seen


def test_the_pool_state_needs_no_asyncio_ssl_or_socket() -> None:
    direct = {name for name, _ in GRAPH.external["_pool.state"]} & NO_IO
    assert not direct, f"_pool.state imports {sorted(direct)}"
    needed = {
        (module, name)
        for module in runtime_closure("_pool.state") | runtime_closure("_pool.key")
        for name, typing_only in GRAPH.external[module]
        if name in NO_IO and not typing_only
    }
    assert not needed, f"_pool.state needs these through its imports: {sorted(needed)}"


def test_only_the_cli_imports_the_cli() -> None:
    wrong = [
        describe(e)
        for e in GRAPH.edges
        if under(e.target, "cli") and not (under(e.source, "cli") or e.source == "__main__")
    ]
    assert not wrong, "\n".join(wrong)


# The package's __init__ imports the client (and so asyncio): the script puts an empty
# package in its place, so only the modules named and what they import are loaded.
NO_IO_SCRIPT = """
import importlib.util, sys, types
spec = importlib.util.find_spec("glasspool")
package = types.ModuleType("glasspool")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["glasspool"] = package
for name in {blocked!r}:
    sys.modules[name] = None  # importing it now raises ImportError
import glasspool._pool.key
import glasspool._pool.state
print(sorted(m for m in sys.modules if m.startswith("glasspool.")))
"""


def test_the_pool_state_and_key_import_with_asyncio_ssl_and_socket_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_IO_SCRIPT.format(blocked=sorted(NO_IO))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout))
    assert {"glasspool._pool.state", "glasspool._pool.key"} <= loaded
    assert "glasspool.client" not in loaded


def test_the_script_does_block_them() -> None:
    script = NO_IO_SCRIPT.format(blocked=sorted(NO_IO)).replace(
        "import glasspool._pool.key", "import glasspool._pool.asyncio"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0 and "import of asyncio halted" in result.stderr


# Each module imported first, on its own: a cycle that only bites in one import order fails.
# glasspool's modules are forgotten between imports (third-party ones stay loaded).
ALONE_SCRIPT = """
import importlib, sys
failed = []
for name in {names!r}:
    for loaded in [m for m in sys.modules if m == "glasspool" or m.startswith("glasspool.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
print(failed)
"""


def test_every_module_imports_first_on_its_own() -> None:
    names = sorted(full_name(m) for m in GRAPH.modules if m != "__main__")  # __main__ runs
    result = subprocess.run(
        [sys.executable, "-c", ALONE_SCRIPT.format(names=names)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout) == []
