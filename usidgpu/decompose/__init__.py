"""Out-of-core decompositions: SVD, PCA, NMF and k-means, on NumPy or CuPy."""

from .kmeans import kmeans
from .nmf import nmf
from .results import KMeansResult, NMFResult, PCAResult, SVDResult
from .svd import pca, svd

__all__ = ["KMeansResult", "NMFResult", "PCAResult", "SVDResult", "kmeans", "nmf", "pca", "svd"]
