"""``usidgpu validate FILE``: check a file against the rules of the USID model (exit 1 on problems)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ..core.errors import DatasetNotFoundError, NotUSIDError
from .common import EXIT_OK, EXIT_PROBLEMS


def add_parser(sub: Any, common: Callable) -> None:
    p = sub.add_parser("validate", help="check a file against the rules of the USID model")
    p.add_argument("file", help="HDF5 file (opened read-only), or sample:NAME")
    p.add_argument("-d", "--dataset", help="only this dataset (HDF5 path)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common(p)
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..storage import is_dataset
    from ..usid.file import USIDFile
    from ..usid.rules import ERROR
    from ..usid.validate import dataset_problems, validate

    with USIDFile(args.file) as f:
        if args.dataset is not None:
            if args.dataset not in f.h5:
                raise DatasetNotFoundError(f"{args.file}: no dataset {args.dataset!r} in the file")
            obj = f.h5[args.dataset]
            if not is_dataset(obj):
                raise NotUSIDError(f"{args.file}: {obj.name} is a group, not a dataset")
            problems = dataset_problems(obj)
        else:
            problems = validate(f)
    if problems and problems[0].rule == "no-main":  # (any notes after it say what was linked)
        raise NotUSIDError(f"{args.file}: {problems[0].message}")
    errors = [p for p in problems if p.severity == ERROR]
    if args.json:
        print(
            json.dumps(
                {"file": str(args.file), "valid": not errors, "problems": [p.__dict__ for p in problems]}, indent=2
            )
        )
    else:
        for p in problems:
            print(str(p))
        if errors:
            print(f"{args.file}: INVALID: {len(errors)} problem{'s' if len(errors) != 1 else ''}")
        else:
            counts = [(sum(p.severity == kind for p in problems), kind) for kind in ("warning", "note")]
            said = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for n, kind in counts if n)
            print(f"{args.file}: valid USID{f' ({said})' if said else ''}")
    return EXIT_PROBLEMS if errors else EXIT_OK
