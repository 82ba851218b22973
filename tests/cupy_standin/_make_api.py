"""Regenerate ``_cupy_api.py``: the names (and Python signatures) that CuPy really exports.

Developer tool, not imported by the stand-in. It reads CuPy's source at a git tag and follows the
``from X import Y [as Z]`` lines of each public ``__init__`` (and the top-level ``def``/alias lines
there) to the module that defines each name, to learn

* which names exist (the allowlist: anything else raises ``AttributeError`` in the stand-in);
* what kind of object each is (``def`` = Python function, ``ufunc``, ``numpy`` = borrowed from
  NumPy, ``class``, ``module``, ``other`` = Cython function or object);
* for Python/Cython functions, their parameter names, so that the stand-in refuses keyword
  arguments that CuPy would refuse (``where=`` on a ufunc, ``min=`` on ``cupy.clip``, ...).

Usage::

    python tests/cupy_standin/_make_api.py /work/.mirror/cupy+cupy/repo v14.2.0 > tests/cupy_standin/_cupy_api.py
"""

from __future__ import annotations

import ast
import pprint
import re
import subprocess
import sys

#: Public modules of CuPy imitated by the stand-in, and the file that defines each.
MODULES = {
    "cupy": "cupy/__init__.py",
    "cupy.linalg": "cupy/linalg/__init__.py",
    "cupy.fft": "cupy/fft/__init__.py",
    "cupy.random": "cupy/random/__init__.py",
    "cupy.lib": "cupy/lib/__init__.py",
    "cupy.lib.stride_tricks": "cupy/lib/stride_tricks.py",
    "cupyx": "cupyx/__init__.py",
    "cupyx.scipy": "cupyx/scipy/__init__.py",
    "cupyx.scipy.special": "cupyx/scipy/special/__init__.py",
}

UFUNC_FACTORIES = re.compile(
    r"create_ufunc|create_math_ufunc|create_comparison|_create_bit_op|create_arithmetic|ufunc\("
)


class Source:
    def __init__(self, repo: str, ref: str):
        self.repo, self.ref = repo, ref
        out = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", ref], capture_output=True, text=True)
        self.files = set(out.stdout.split())
        self._cache: dict[str, str] = {}

    def text(self, path: str) -> str | None:
        if path not in self.files:
            return None
        if path not in self._cache:
            self._cache[path] = subprocess.run(
                ["git", "-C", self.repo, "show", f"{self.ref}:{path}"], capture_output=True, text=True
            ).stdout
        return self._cache[path]

    def module_file(self, dotted: str) -> str | None:
        base = dotted.replace(".", "/")
        for cand in (base + ".py", base + "/__init__.py", base + ".pyx"):
            if cand in self.files:
                return cand
        return None


def _sig_from_ast(fn: ast.FunctionDef) -> dict:
    a = fn.args
    pos = [x.arg for x in a.posonlyargs + a.args]
    return {
        "positional": tuple(pos),
        "kwonly": tuple(x.arg for x in a.kwonlyargs),
        "varargs": a.vararg is not None,
        "varkw": a.kwarg is not None,
        "posonly": len(a.posonlyargs),
    }


_PYX_DEF = re.compile(r"^(?:cpdef|def)\s+(?:[\w.\[\]]+\s+)?(\w+)\s*\(", re.M)


def _pyx_signature(text: str, name: str) -> dict | None:
    """Parameter names of a Cython ``def``/``cpdef`` (types and defaults dropped)."""
    for m in _PYX_DEF.finditer(text):
        if m.group(1) != name:
            continue
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        params = text[m.end() : i - 1]
        parts, cur, depth = [], "", 0
        for ch in params:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        pos, kwonly, varargs, varkw, star = [], [], False, False, False
        for p in parts:
            p = p.split("=")[0].strip()
            if not p:
                continue
            if p == "*":
                star = True
                continue
            if p.startswith("**"):
                varkw = True
                continue
            if p.startswith("*"):
                varargs = star = True
                continue
            word = p.split()[-1].lstrip("*&")
            (kwonly if star else pos).append(word)
        return {"positional": tuple(pos), "kwonly": tuple(kwonly), "varargs": varargs, "varkw": varkw, "posonly": 0}
    return None


class Resolver:
    def __init__(self, src: Source):
        self.src = src

    def resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, dict | None]:
        """Kind and signature of ``name`` as defined in ``module``."""
        if depth > 8:
            return "other", None
        if module == "numpy" or module.startswith("numpy."):
            return "numpy", None
        path = self.src.module_file(module)
        if path is None:
            return "other", None
        text = self.src.text(path) or ""
        if path.endswith(".pyx"):
            sig = _pyx_signature(text, name)
            if sig is not None:
                return "other", sig
            m = re.search(rf"^(?:cdef\s+)?(?:object\s+)?{name}\s*=\s*(.+)$", text, re.M)
            if m:
                rhs = m.group(1)
                if UFUNC_FACTORIES.search(rhs):
                    return "ufunc", None
                ref = rhs.strip()
                if ref.isidentifier() and ref != name:
                    return self.resolve(module, ref, depth + 1)
            return "other", None
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return "other", None
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return "def", _sig_from_ast(node)
            if isinstance(node, ast.ClassDef) and node.name == name:
                return "class", None
            if isinstance(node, ast.AnnAssign) and node.value is not None:
                node = ast.Assign(targets=[node.target], value=node.value)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                rhs = ast.unparse(node.value)
                if UFUNC_FACTORIES.search(rhs):
                    return "ufunc", None
                if isinstance(node.value, ast.Name):
                    return self.resolve(module, node.value.id, depth + 1)
                if isinstance(node.value, ast.Attribute) and ast.unparse(node.value).startswith("_core."):
                    return self.resolve("cupy._core", node.value.attr, depth + 1)
                return "other", None
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        if alias.name == name and self.src.module_file(f"{node.module}.{name}"):
                            return "module", None
                        return self.resolve(node.module, alias.name, depth + 1)
        return "other", None


def exports(src: Source, res: Resolver, module: str, path: str) -> dict[str, tuple[str, dict | None]]:
    """Public names of one CuPy module with their kind and signature."""
    tree = ast.parse(src.text(path) or "")
    out: dict[str, tuple[str, dict | None]] = {}

    def visit(body):
        for node in body:
            if isinstance(node, ast.If):  # NumPy-version shims: take the NumPy-2 branch
                visit(node.orelse or node.body)
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    public = alias.asname or alias.name
                    if public.startswith("_") or node.module == "__future__":
                        continue
                    if src.module_file(f"{node.module}.{alias.name}"):
                        out[public] = ("module", None)
                    else:
                        out[public] = res.resolve(node.module, alias.name)
            elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                out[node.name] = ("def", _sig_from_ast(node))
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                out[node.name] = ("class", None)
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                for t in node.targets:
                    if isinstance(t, ast.Tuple):
                        names += [e.id for e in t.elts if isinstance(e, ast.Name)]
                chain = node.value
                while isinstance(chain, ast.Assign):
                    chain = chain.value
                for n in names:
                    if n.startswith("_") or n == "__all__":
                        continue
                    if isinstance(chain, ast.Name) and chain.id in out:
                        out[n] = out[chain.id]
                    elif isinstance(chain, ast.UnaryOp) or isinstance(chain, ast.Constant):
                        out[n] = ("numpy", None)
                    elif isinstance(chain, ast.Attribute) and ast.unparse(chain).startswith("_core."):
                        out[n] = res.resolve("cupy._core", chain.attr)
                    else:
                        out[n] = ("other", None)

    visit(tree.body)
    # names chained as ``a = b = c``
    return out


def main(repo: str, ref: str) -> None:
    src = Source(repo, ref)
    res = Resolver(src)
    names: dict[str, dict[str, str]] = {}
    sigs: dict[str, dict] = {}
    for module, path in MODULES.items():
        table = exports(src, res, module, path)
        names[module] = {k: v[0] for k, v in sorted(table.items())}
        for k, (_kind, sig) in sorted(table.items()):
            if sig is not None:
                sigs[f"{module}.{k}"] = sig
    print('"""Generated by ``_make_api.py`` from CuPy\'s source: do not edit by hand.')
    print()
    print(f"CuPy {ref}: the public names of each imitated module with their kind, and the parameter")
    print('names of CuPy\'s Python/Cython functions ("positional", "kwonly", "varargs", "varkw").')
    print('"""')
    print()
    print(f"CUPY_REF = {ref!r}")
    print()
    print("NAMES = " + pprint.pformat(names, width=110, sort_dicts=True))
    print()
    print("SIGNATURES = " + pprint.pformat(sigs, width=110, sort_dicts=True))


if __name__ == "__main__":
    main(*sys.argv[1:3])
