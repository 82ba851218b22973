"""A cuML stand-in: ``PCA``, ``TruncatedSVD``, ``KMeans`` computed on the host (scikit-learn,
NumPy), with cuML's constructor arguments and fitted attributes (RAPIDS cuML 25/26,
``python/cuml/cuml/decomposition/{pca,tsvd}.pyx``, ``cluster/kmeans.pyx``).

Imitated: keyword-only constructors (``KMeans(8)`` fails as in cuML), ``n_components`` defaults
(PCA: all, TruncatedSVD: 1), KMeans ``init`` in {'scalable-k-means++', 'k-means||',
'k-means++', 'random'} or an array and ``n_init='auto'`` (1 run for k-means++-like inits, 10
otherwise); inputs as device arrays (used in place) or NumPy arrays (copied to the device: a
counted transfer); ``output_type`` 'cupy' (device arrays), 'numpy' (NumPy arrays: reading a
fitted attribute is a device → host transfer), 'input' / None (the type of the fitted input);
float32/float64 computation in the input's precision (other dtypes become float32, as cuML's
``convert_dtype``); PCA/TSVD component signs flipped so each component's largest-magnitude
entry is positive; ``labels_`` int32, ``inertia_`` float, ``n_iter_`` int.

Not imitated: cuML's numerics (eigen-decomposition of the covariance in float32 on a GPU),
'cudf'/'pandas' outputs, multi-GPU, sparse input.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from . import _convert, _counters, _streams

_OUTPUT_TYPES = (None, "input", "cupy", "numpy")


def _to_device(X: Any) -> tuple[np.ndarray, str]:
    """The data as cuML sees them on the device, and the input's type ('cupy' or 'numpy')."""
    if type(X) is _convert.ndarray:
        _streams.compute()
        a, kind = X._a, "cupy"
    elif isinstance(X, np.ndarray) or isinstance(X, (list, tuple)):
        a = np.array(X)
        _counters.record("h2d", f"cuml: host input {a.shape} copied to the device")
        kind = "numpy"
    else:
        raise TypeError(f"cuml stand-in: unsupported input type {type(X).__name__}")
    if a.ndim == 1:
        a = a[:, None]
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return np.ascontiguousarray(a), kind


class _Base:
    _fitted_arrays: tuple[str, ...] = ()

    def __init__(self, *, verbose: Any = False, output_type: Any = None):
        if output_type not in _OUTPUT_TYPES:
            raise NotImplementedError(f"cuml stand-in: output_type={output_type!r} is not imitated")
        self.verbose = verbose
        self.output_type = output_type
        self._input_kind = "cupy"

    def _out(self, a: np.ndarray) -> Any:
        kind = self.output_type if self.output_type not in (None, "input") else self._input_kind
        if kind == "numpy":
            _counters.record("d2h", f"cuml: {type(self).__name__} result {a.shape} to the host")
            _counters.record("syncs", "cuml: result to the host")
            return np.array(a)
        return _convert.from_numpy(np.array(a))

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._fitted_arrays:
            raw = self.__dict__.get("_" + name)
            if raw is None:
                raise AttributeError(f"{type(self).__name__} has no attribute {name!r}: call fit first")
            return self._out(raw)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def _flip(components: np.ndarray) -> np.ndarray:
    idx = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


class PCA(_Base):
    """``cuml.PCA(*, copy=True, iterated_power=15, n_components=None, svd_solver='auto',
    tol=1e-7, verbose=False, whiten=False, output_type=None)``."""

    _fitted_arrays = ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_", "mean_")

    def __init__(
        self,
        *,
        copy: bool = True,
        iterated_power: int = 15,
        n_components: Any = None,
        svd_solver: str = "auto",
        tol: float = 1e-7,
        verbose: Any = False,
        whiten: bool = False,
        output_type: Any = None,
    ):
        super().__init__(verbose=verbose, output_type=output_type)
        self.copy, self.iterated_power, self.n_components = copy, iterated_power, n_components
        self.svd_solver, self.tol, self.whiten = svd_solver, tol, whiten

    def fit(self, X: Any, y: Any = None) -> PCA:
        if self.svd_solver not in ("auto", "full", "jacobi"):
            raise ValueError(f"Expected `svd_solver` to be one of ['auto', 'full', 'jacobi'], got {self.svd_solver!r}")
        from sklearn.decomposition import PCA as SkPCA

        a, self._input_kind = _to_device(X)
        n_samples, n_features = a.shape
        k = min(n_samples, n_features) if self.n_components is None else int(self.n_components)
        sk = SkPCA(n_components=k, svd_solver="full", whiten=self.whiten).fit(a)
        self._components_ = _flip(sk.components_).astype(a.dtype)
        self._explained_variance_ = sk.explained_variance_.astype(a.dtype)
        self._explained_variance_ratio_ = sk.explained_variance_ratio_.astype(a.dtype)
        self._singular_values_ = sk.singular_values_.astype(a.dtype)
        self._mean_ = sk.mean_.astype(a.dtype)
        self.noise_variance_ = float(sk.noise_variance_)
        self.n_components_, self.n_samples_, self.n_features_in_ = k, n_samples, n_features
        return self

    def transform(self, X: Any) -> Any:
        a, kind = _to_device(X)
        t = (a - self._mean_) @ self._components_.T
        if self.whiten:
            t = t / np.sqrt(self._explained_variance_)
        return self._out_for(t.astype(a.dtype), kind)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> Any:
        a, kind = _to_device(X)
        if self.whiten:
            a = a * np.sqrt(self._explained_variance_)
        return self._out_for((a @ self._components_ + self._mean_).astype(a.dtype), kind)

    def _out_for(self, a: np.ndarray, input_kind: str) -> Any:
        saved, self._input_kind = self._input_kind, input_kind
        try:
            return self._out(a)
        finally:
            self._input_kind = saved


class TruncatedSVD(PCA):
    """``cuml.TruncatedSVD(*, algorithm='full', n_components=1, n_iter=15, random_state=None,
    tol=1e-7, verbose=False, output_type=None)``: no centring."""

    _fitted_arrays = ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_")

    def __init__(
        self,
        *,
        algorithm: str = "full",
        n_components: int = 1,
        n_iter: int = 15,
        random_state: Any = None,
        tol: float = 1e-7,
        verbose: Any = False,
        output_type: Any = None,
    ):
        _Base.__init__(self, verbose=verbose, output_type=output_type)
        self.algorithm, self.n_components, self.n_iter = algorithm, n_components, n_iter
        self.random_state, self.tol = random_state, tol
        self.whiten = False

    def fit(self, X: Any, y: Any = None) -> TruncatedSVD:
        a, self._input_kind = _to_device(X)
        k = int(self.n_components)
        _u, s, vt = np.linalg.svd(a.astype(np.float64), full_matrices=False)
        comps = _flip(vt[:k])
        t = a.astype(np.float64) @ comps.T
        self._components_ = comps.astype(a.dtype)
        self._singular_values_ = s[:k].astype(a.dtype)
        var = t.var(axis=0)
        self._explained_variance_ = var.astype(a.dtype)
        self._explained_variance_ratio_ = (var / a.astype(np.float64).var(axis=0).sum()).astype(a.dtype)
        self._mean_ = np.zeros(a.shape[1], a.dtype)
        self.n_components_ = k
        return self

    def transform(self, X: Any) -> Any:
        a, kind = _to_device(X)
        return self._out_for((a @ self._components_.T).astype(a.dtype), kind)

    def inverse_transform(self, X: Any) -> Any:
        a, kind = _to_device(X)
        return self._out_for((a @ self._components_).astype(a.dtype), kind)


class KMeans(_Base):
    """``cuml.KMeans(*, n_clusters=8, max_iter=300, tol=1e-4, verbose=False, random_state=None,
    init='scalable-k-means++', n_init='auto', oversampling_factor=2.0,
    max_samples_per_batch=32768, device_buffer_samples=0, init_size=0, output_type=None)``."""

    _fitted_arrays = ("cluster_centers_", "labels_")

    def __init__(
        self,
        *,
        n_clusters: int = 8,
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: Any = False,
        random_state: Any = None,
        init: Any = "scalable-k-means++",
        n_init: Any = "auto",
        oversampling_factor: float = 2.0,
        max_samples_per_batch: int = 1 << 15,
        device_buffer_samples: int = 0,
        init_size: int = 0,
        output_type: Any = None,
    ):
        super().__init__(verbose=verbose, output_type=output_type)
        self.n_clusters, self.max_iter, self.tol = n_clusters, max_iter, tol
        self.random_state, self.init, self.n_init = random_state, init, n_init
        self.oversampling_factor, self.max_samples_per_batch = oversampling_factor, max_samples_per_batch
        self.device_buffer_samples, self.init_size = device_buffer_samples, init_size

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        from sklearn.cluster import KMeans as SkKMeans

        a, self._input_kind = _to_device(X)
        init = self.init
        if isinstance(init, str):
            if init not in ("scalable-k-means++", "k-means||", "k-means++", "random"):
                raise ValueError(f"init={init!r} is not supported")
            sk_init = "random" if init == "random" else "k-means++"
            n_init = (1 if sk_init == "k-means++" else 10) if self.n_init == "auto" else int(self.n_init)
        else:
            centers, _kind = _to_device(init)
            if centers.shape != (self.n_clusters, a.shape[1]):
                raise ValueError(
                    f"The shape of the initial centers {centers.shape} does not match the number of clusters "
                    f"{self.n_clusters} and features {a.shape[1]}."
                )
            sk_init, n_init = centers.astype(a.dtype), 1
        seed = self.random_state
        sk = SkKMeans(
            n_clusters=self.n_clusters,
            init=sk_init,
            n_init=n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=seed,
        )
        w = _to_device(sample_weight)[0].ravel() if sample_weight is not None else None
        sk.fit(a, sample_weight=w)
        self._cluster_centers_ = sk.cluster_centers_.astype(a.dtype)
        self._labels_ = sk.labels_.astype(np.int32)
        self.inertia_ = float(sk.inertia_)
        self.n_iter_ = int(sk.n_iter_)
        self.n_features_in_ = a.shape[1]
        return self

    def predict(self, X: Any, sample_weight: Any = None) -> Any:
        a, kind = _to_device(X)
        d = ((a[:, None, :] - self._cluster_centers_[None]) ** 2).sum(-1)
        saved, self._input_kind = self._input_kind, kind
        try:
            return self._out(d.argmin(1).astype(np.int32))
        finally:
            self._input_kind = saved

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        return self.fit(X, sample_weight=sample_weight).labels_


for _cls in (PCA, TruncatedSVD, KMeans):
    _cls.__module__ = "cuml"


def module() -> types.ModuleType:
    """A ``cuml`` module object for ``sys.modules``."""
    import importlib.machinery

    m = types.ModuleType("cuml", "cupy_standin's imitation of RAPIDS cuML (host computation, test-only).")
    m.__spec__ = importlib.machinery.ModuleSpec("cuml", loader=None, is_package=True)
    m.__path__ = []  # type: ignore[attr-defined]
    m.PCA, m.TruncatedSVD, m.KMeans = PCA, TruncatedSVD, KMeans  # type: ignore[attr-defined]
    m.__version__ = "26.02.00"  # type: ignore[attr-defined]
    return m
