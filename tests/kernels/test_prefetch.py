"""prefetch compiles to a prefetch instruction and has no visible effect on values."""

import numba
import numpy as np

from pagedserve.kernels.prefetch import prefetch


@numba.njit
def _sum_with_prefetch(x):
    total = 0.0
    base = x.ctypes.data
    for i in range(x.shape[0]):
        prefetch(base + 8 * min(i + 64, x.shape[0] - 1))
        total += x[i]
    return total


def test_prefetch_emits_instruction_and_keeps_results():
    x = np.arange(1000, dtype=np.float64)
    assert _sum_with_prefetch(x) == x.sum()
    asm = _sum_with_prefetch.inspect_asm(_sum_with_prefetch.signatures[0])
    assert "prefetch" in asm
