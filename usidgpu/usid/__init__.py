"""The USID data model on HDF5: dimensions, Main datasets, writing, validation, results groups."""

from .ancillary import Layout, build_tables, infer_layout
from .dataset import MainDataset
from .dimension import Dimension
from .file import ResultsGroup, USIDFile, open
from .results import ResultsWriter, find_partial
from .rules import Problem
from .validate import validate
from .write import write_main

__all__ = [
    "Dimension",
    "Layout",
    "MainDataset",
    "Problem",
    "ResultsGroup",
    "ResultsWriter",
    "USIDFile",
    "build_tables",
    "find_partial",
    "infer_layout",
    "open",
    "validate",
    "write_main",
]
