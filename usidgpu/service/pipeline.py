"""Pipeline rules: which analyses run on a dataset when it lands.

A small TOML file (``usidgpu serve --pipeline FILE``) lists rules; every rule that matches a new
dataset queues one job. Without a file the defaults below apply::

    [[rule]]
    name = "denoise images"        # shown with the job
    kind = ["image"]               # any of these kinds (see usidgpu.service.describe.kind_of)
    file = "*.h5"                  # optional: a glob on the file name
    quantity = "intensity"         # optional: a word of the quantity (case-insensitive)
    dims = ["X", "Y"]              # optional: dimensions the dataset must have
    analysis = "denoise"           # svd, pca, nmf, cluster, denoise, atoms, bayes
    parameters = {}                # the analysis' options, as on the command line (k = 8, ...)

An empty file (no rules) turns the pipeline off. Rules are checked when the service starts: a
wrong analysis, parameter or value stops it with one line, before any file is touched.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidInput
from .commands import Commands

DEFAULT_RULES: list[dict[str, Any]] = [
    {"name": "denoise images", "kind": ["image"], "analysis": "denoise", "parameters": {}},
    {"name": "atomic columns", "kind": ["image"], "analysis": "atoms", "parameters": {}},
    {"name": "SVD of spectrum images", "kind": ["spectrum image"], "analysis": "svd", "parameters": {"k": 8}},
    {"name": "k-means of spectrum images", "kind": ["spectrum image"], "analysis": "cluster", "parameters": {"k": 4}},
    {"name": "Bayesian inference of G-mode", "kind": ["G-mode"], "analysis": "bayes", "parameters": {}},
]
"""What runs without a pipeline file: images → windowed-SVD denoising and atomic columns;
spectrum images → SVD (8 components) and k-means (4 clusters); G-mode → Bayesian inference."""

_KEYS = {"name", "kind", "file", "quantity", "dims", "analysis", "parameters"}


@dataclass(frozen=True)
class Rule:
    """One pipeline rule (see the module's docstring)."""

    name: str
    analysis: str
    parameters: dict[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    file: str | None = None
    quantity: str | None = None
    dims: tuple[str, ...] = ()

    def matches(self, summary: dict[str, Any]) -> bool:
        """Whether a dataset (its catalog summary) is one this rule runs on."""
        if self.kinds and summary["kind"] not in self.kinds:
            return False
        if self.file and not fnmatch.fnmatch(os.path.basename(summary["file"]), self.file):
            return False
        if self.quantity and self.quantity.lower() not in str(summary["quantity"]).lower():
            return False
        names = {d["name"].lower() for d in summary["dims"]}
        return all(d.lower() in names for d in self.dims)

    @property
    def origin(self) -> str:
        """How its jobs are marked (a rule runs once per dataset)."""
        return f"pipeline:{self.name}"


def rule_from(entry: Any, index: int, commands: Commands) -> Rule:
    """A :class:`Rule` from one ``[[rule]]`` table, checked against the analyses' options."""
    where = f"pipeline rule {index + 1}"
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: a rule is a table ([[rule]])")
    unknown = set(entry) - _KEYS
    if unknown:
        raise InvalidInput(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a rule takes {', '.join(sorted(_KEYS))}"
        )
    if "analysis" not in entry:
        raise InvalidInput(f"{where}: no analysis")
    kinds = entry.get("kind", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    params = entry.get("parameters", {})
    if not isinstance(params, dict) or not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise InvalidInput(f"{where}: kind is a list of names and parameters a table")
    rule = Rule(
        name=str(entry.get("name", f"rule {index + 1}")),
        analysis=str(entry["analysis"]),
        parameters=params,
        kinds=tuple(kinds),
        file=entry.get("file"),
        quantity=entry.get("quantity"),
        dims=tuple(entry.get("dims", ())),
    )
    try:
        commands.argv(rule.analysis, rule.parameters)
    except InvalidInput as exc:
        raise InvalidInput(f"{where} ({rule.name}): {exc}") from None
    return rule


def load_rules(path: str | os.PathLike | None, commands: Commands) -> list[Rule]:
    """The pipeline's rules: from a TOML file, or :data:`DEFAULT_RULES`."""
    if path is None:
        entries = DEFAULT_RULES
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise InvalidInput(f"--pipeline {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"--pipeline {path}: not valid TOML: {exc}") from None
        entries = doc.get("rule", [])
        if not isinstance(entries, list):
            raise InvalidInput(f"--pipeline {path}: rules are [[rule]] tables")
    return [rule_from(e, i, commands) for i, e in enumerate(entries)]
