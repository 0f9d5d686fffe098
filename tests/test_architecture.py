"""The package's shape, checked from its source (no imports run): which package may import which.

Every ``import`` counts, at module level or inside a function (a lazy import is still a dependency).
The rules are those of docs/architecture.md: no cycle between packages; the engine artifact and its
backends (``engines``) and the shared core (``core``) stay below everything that trains, exports or builds.
"""
import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_stad"


def unit(module):
    """``edge_stad.engines.loader`` -> ``edge_stad.engines``; ``edge_stad.atomic`` stays itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports():
    """``{(importer unit, imported unit or top-level third-party package)}`` over the whole package."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    edges = set()
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("edge_stad."):
                    if name in modules and unit(name) != unit(module):
                        edges.add((unit(module), unit(name)))
                elif name != "edge_stad":
                    edges.add((unit(module), name.split(".")[0]))
    return edges


EDGES = imports()


def test_no_cycle_between_packages():
    graph = collections.defaultdict(set)
    for a, b in EDGES:
        if b.startswith("edge_stad"):
            graph[a].add(b)
    state, stack = {}, []

    def visit(v):   # depth-first; a grey node met again closes a cycle
        state[v] = "grey"
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == "grey":
                raise AssertionError("package cycle: " + " -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = "black"

    for v in sorted(graph):
        if v not in state:
            visit(v)
    assert ("edge_stad.engines", "edge_stad.core") in EDGES   # the walk sees the package's imports


def allowed(unit_name, *others):
    return {b for a, b in EDGES if a == unit_name} - set(others)


def test_engines_import_neither_torch_nor_what_builds_them():
    banned = {"torch", "edge_stad.export", "edge_stad.quant", "edge_stad.train", "edge_stad.build",
              "edge_stad.models", "edge_stad.torch_backends", "edge_stad.data", "edge_stad.eval",
              "edge_stad.runtime"}
    assert not allowed("edge_stad.engines") & banned


def test_the_core_stands_on_numpy_alone():
    assert allowed("edge_stad.core") <= {"numpy", "edge_stad.boxes", "edge_stad.errors", "__future__", "typing",
                                         "dataclasses", "collections", "math", "itertools", "heapq", "warnings",
                                         "functools", "os", "bisect"}


def test_the_runtime_imports_no_torch_and_nothing_that_trains_or_builds():
    banned = {"torch", "edge_stad.train", "edge_stad.build", "edge_stad.export", "edge_stad.quant",
              "edge_stad.models", "edge_stad.eval", "edge_stad.data"}
    assert not allowed("edge_stad.runtime") & banned
