"""Real FFTs on NumPy (scipy.fft, all cores) or CuPy (cuFFT), one call site for both."""

from __future__ import annotations

from typing import Any

import numpy as np


def next_fast_len(n: int) -> int:
    """A size ≥ n whose FFT is fast (5-smooth), as scipy.fft.next_fast_len."""
    import scipy.fft

    return int(scipy.fft.next_fast_len(int(n), real=True))


def rfft2(xp: Any, a: Any, shape: tuple[int, int]) -> Any:
    if xp is np:
        import scipy.fft

        return scipy.fft.rfft2(a, s=shape, workers=-1)
    return xp.fft.rfft2(a, s=shape)


def irfft2(xp: Any, a: Any, shape: tuple[int, int]) -> Any:
    if xp is np:
        import scipy.fft

        return scipy.fft.irfft2(a, s=shape, workers=-1)
    return xp.fft.irfft2(a, s=shape)


def rfft(xp: Any, a: Any, n: int) -> Any:
    if xp is np:
        import scipy.fft

        return scipy.fft.rfft(a, n=n, axis=-1, workers=-1)
    return xp.fft.rfft(a, n=n, axis=-1)


def irfft(xp: Any, a: Any, n: int) -> Any:
    if xp is np:
        import scipy.fft

        return scipy.fft.irfft(a, n=n, axis=-1, workers=-1)
    return xp.fft.irfft(a, n=n, axis=-1)
