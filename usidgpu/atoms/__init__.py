"""Atomic columns: find, refine by batched 2-D Gaussian fits, lattice analysis, tracking."""
