"""The one JIT decorator of the package.

Every kernel is compiled in nopython mode, releases the GIL (the engine thread computes while the
asyncio loop keeps serving), is cached on disk (a second start does not recompile) and uses
NumPy's error model (division by zero gives inf/nan like NumPy, no Python exception paths).
"""

from __future__ import annotations

import numba

# fastmath is left off on purpose: reductions must stay deterministic and batch-invariant.
jit = numba.njit(cache=True, nogil=True, error_model="numpy")
parallel_jit = numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
