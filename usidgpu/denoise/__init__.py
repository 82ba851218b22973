"""Denoising: windowed SVD of images (raw → cleaned → removed noise) and spectral PCA denoising."""

from .spectral import spectral_denoise
from .window_size import lattice_period, window_from_fft
from .windowed import WindowedSVDResult, windowed_svd

__all__ = ["WindowedSVDResult", "lattice_period", "spectral_denoise", "window_from_fft", "windowed_svd"]
