"""The one JIT decorator of the package.

Every kernel is compiled in nopython mode, releases the GIL (the engine thread computes while the
asyncio loop keeps serving), is cached on disk (a second start does not recompile; where: see
`kernels/compile_cache.py`) and uses NumPy's error model (division by zero gives inf/nan like
NumPy, no Python exception paths).
"""

from __future__ import annotations

import numba

# fastmath is left off on purpose: reductions must stay deterministic and batch-invariant.
jit = numba.njit(cache=True, nogil=True, error_model="numpy")
parallel_jit = numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)

# Only floating-point contraction (a * b + c -> fma) for kernels written so that every update is a
# single `acc += a * b` statement: there is then exactly one way to contract each statement, the
# same in every specialisation, so results stay deterministic and batch invariant.
contract_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
contract_parallel_jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"},
                                   parallel=True)
