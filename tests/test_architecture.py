"""The import rules of docs/architecture.md: data flows one way, profile -> simulate -> tune -> policy -> server.

Every `import specsim.X` / `from specsim.X import ...` in the package (inside functions too) is checked
against the layer table below, which mirrors the doc's "may import" column.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "specsim"
SHARED = {"errors", "io", "formats", "shared_data", "metrics", "prompts", "runs", "terminal"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "terminal": set(),
    "shared_data": set(),
    "io": {"errors"},
    "metrics": {"errors"},
    "formats": {"errors", "io"},
    "prompts": {"errors", "formats", "shared_data"},
    "runs": {"io", "metrics", "formats"},
    "vllmkit": {"errors", "models"},
    "models": {"errors", "io"},
    "traffic": SHARED,
    "profiler": SHARED | {"models", "vllmkit"},
    "simulator": SHARED | {"vllmkit"},
    "tuner": SHARED | {"simulator", "profiler"},
    "policies": SHARED | {"models", "vllmkit"},
    "verify": SHARED | {"policies", "tuner", "simulator", "profiler", "models", "vllmkit"},
}
"""Package -> the specsim packages it may import (besides itself)."""
TOP = {"__init__", "__main__", "entry", "cli", "api", "demo"}
"""Top-level modules above every stage: they may import anything."""
EXCEPTIONS: dict[tuple[str, str], str] = {}
"""Upward imports the doc lists as known exceptions, with their reason."""


def _imports(path: Path) -> set[str]:
    """The specsim packages a file imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "specsim":
            names = [f"specsim.{a.name}" for a in node.names]  # from specsim import runs
        else:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for n in names:
            parts = n.split(".")
            if parts[0] == "specsim" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_import_follows_the_layers() -> None:
    bad: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        owner = rel.split("/")[0].removesuffix(".py")
        if owner in TOP:
            continue
        assert owner in ALLOWED, f"new package specsim/{owner}: add it to docs/architecture.md and ALLOWED here"
        for target in _imports(path) - {owner}:
            if target in ALLOWED[owner]:
                continue
            if (rel, target) in EXCEPTIONS:
                used.add((rel, target))
                continue
            bad.append(f"specsim/{rel} imports specsim.{target}")
    assert not bad, "imports against docs/architecture.md's layers: " + "; ".join(bad)
    assert used == set(EXCEPTIONS), f"listed exceptions no longer needed: {set(EXCEPTIONS) - used}"


def test_the_doc_lists_every_package() -> None:
    doc = (PKG.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name in ALLOWED:
        if (PKG / name).is_dir():
            assert f"| `{name}` |" in doc, f"docs/architecture.md has no row for specsim/{name}"


def test_the_layers_have_no_cycle() -> None:
    # the allowed imports form a DAG, so packages that follow them cannot import each other in a circle
    order: list[str] = []
    left = {k: set(v) - {k} for k, v in ALLOWED.items()}
    while left:
        ready = sorted(k for k, deps in left.items() if not deps - set(order))
        assert ready, f"the layer table has a cycle among {sorted(left)}"
        order += ready
        for k in ready:
            del left[k]
    assert order.index("formats") < order.index("simulator") < order.index("tuner") < order.index("verify")


def test_no_module_imports_itself_back_at_load_time() -> None:
    # module granularity, module-level imports only (those inside functions run after loading); a
    # package counts as its __init__, so `from specsim.simulator import kernel` inside the simulator
    # reaches the package and everything its __init__ imports
    mods = {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
            for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        out = edges.setdefault(mod, set())
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("specsim"):
                out.add(str(node.module))  # `from pkg import sub` runs pkg's __init__ first
                out |= {f"{node.module}.{a.name}" for a in node.names} & mods
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("specsim")}
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)) is not None:
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def test_no_two_modules_import_each_other_at_any_depth() -> None:
    # every import counts here, inside functions and under TYPE_CHECKING too: data flows one way, so
    # two modules that need each other are one module, or share a third below both (module files
    # only: a package's __init__ re-exports, which the load-time test above covers)
    files = {".".join(p.relative_to(PKG.parent).with_suffix("").parts): p
             for p in PKG.rglob("*.py") if p.name != "__init__.py"}
    edges: dict[str, set[str]] = {}
    for mod, path in files.items():
        out = edges.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("specsim"):
                out |= ({str(node.module)} | {f"{node.module}.{a.name}" for a in node.names}) & set(files)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names} & set(files)
        out.discard(mod)
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
