"""The package's import graph keeps its layers (docs/architecture.md): each package imports only
the layers below it — except the documented facades, which import upward lazily — there is no
cycle between packages, and no module imports a private name from another package."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "usidgpu"

#: Layer of every package (a top-level module counts as a package of its own), lowest first.
#: A package may import packages of lower layers; the analyses of one layer do not import each
#: other.
LAYERS = {
    "core": 0,
    "_version": 0,
    "_deprecated": 0,
    "storage": 1,
    "samples": 1,
    "usid": 2,
    "parallel": 3,
    "remote": 3,
    "translate": 3,
    "imageio": 3,
    "decompose": 4,
    "denoise": 5,
    "atoms": 5,
    "bayes": 5,
    "viz": 6,
    "demo": 7,
    "service": 7,
    "cli": 8,
    # the public facades at the top: the package itself, and old module paths kept for users
    "<top>": 9,
    "__main__": 9,
    "backend": 9,
    "stream": 9,
    "errors": 9,
}

#: Imports that go up a layer on purpose, each made lazily inside the one function that needs
#: it: (importing module, imported module) → why.
FACADES = {
    ("usidgpu.usid.dataset", "usidgpu.viz.viewer"): "MainDataset.visualize() opens the viewer",
    ("usidgpu.decompose.results", "usidgpu.viz.results_viewer"): "result.visualize() opens the viewer",
    ("usidgpu.atoms.analysis", "usidgpu.viz.results_viewer"): "ColumnAnalysis.visualize() opens the viewer",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<top>"


def imports():
    """Every import of a usidgpu module by a usidgpu module:
    (importer, imported module, imported names, made at module level)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                target, names = "", []
                for alias in node.names:
                    if alias.name.startswith("usidgpu"):
                        out.append((module, alias.name, [], id(node) in top))
                continue
            else:
                continue
            if target.split(".")[0] == "usidgpu":
                out.append((module, target, names, id(node) in top))
    return out


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS and docs/architecture.md"


def test_no_package_imports_from_a_layer_above_except_the_documented_facades():
    wrong = []
    for importer, target, _names, at_top in imports():
        a, b = package_of(importer), package_of(target)
        if a == b or LAYERS[b] < LAYERS[a]:
            continue
        if (importer, target) in FACADES and not at_top:
            continue
        how = "at module level" if at_top else "in a function"
        wrong.append(f"{importer} (layer {LAYERS[a]}) imports {target} (layer {LAYERS[b]}) {how}")
    assert not wrong, "\n".join(wrong)


def test_the_facades_are_still_needed():
    seen = {(i, t) for i, t, _n, _top in imports()}
    assert set(FACADES) <= seen, f"stale entries in FACADES: {set(FACADES) - seen}"


def test_no_cycle_between_packages():
    graph = defaultdict(set)
    for importer, target, _names, _top in imports():
        a, b = package_of(importer), package_of(target)
        if a != b and (importer, target) not in FACADES:
            graph[a].add(b)

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in (cycle_from(p) for p in list(graph)) if c]
    assert not cycles, "cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_no_private_names_cross_package_borders():
    wrong = [
        f"{importer} imports {name} from {target}"
        for importer, target, names, _top in imports()
        for name in names
        if name.startswith("_") and not name.startswith("__") and package_of(importer) != package_of(target)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["usidgpu", "usidgpu.core", "usidgpu.usid", "usidgpu.decompose"])
def test_importing_the_package_imports_neither_cupy_nor_the_cli_nor_the_viewers(module):
    import subprocess
    import sys

    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('cupy', 'usidgpu.cli', 'usidgpu.viz.viewer', 'ipywidgets', 'dask', 'zarr') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
