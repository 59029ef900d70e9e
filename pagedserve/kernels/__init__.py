"""Numba kernels. Importing the package first points Numba's cache at a directory keyed by the
kernel sources (see compile_cache.py), before any kernel is decorated."""

from pagedserve.kernels.compile_cache import use_keyed_cache_dir

use_keyed_cache_dir()
