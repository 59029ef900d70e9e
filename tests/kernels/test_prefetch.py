"""prefetch compiles to a prefetch instruction and has no visible effect on values."""

import re

import numba
import numpy as np

from pagedserve.kernels.prefetch import prefetch

# An x86 prefetch instruction as an assembly line (mnemonic first), not a symbol name holding the word.
_PREFETCH_INSTRUCTION = re.compile(r"^\s*prefetch(t0|t1|t2|nta|w)\s", re.MULTILINE)


@numba.njit
def _sum_with_prefetch(x):
    total = 0.0
    base = x.ctypes.data
    for i in range(x.shape[0]):
        prefetch(base + 8 * min(i + 64, x.shape[0] - 1))
        total += x[i]
    return total


@numba.njit
def _sum_named_prefetch_but_without_it(x):
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i]
    return total


def _asm(fn, x) -> str:
    fn(x)
    return fn.inspect_asm(fn.signatures[0])


def test_prefetch_emits_instruction_and_keeps_results():
    x = np.arange(1000, dtype=np.float64)
    assert _sum_with_prefetch(x) == x.sum()
    # locality 3 (keep in all cache levels) is prefetcht0
    match = _PREFETCH_INSTRUCTION.search(_asm(_sum_with_prefetch, x))
    assert match and match.group(1) == "t0"


def test_the_instruction_check_is_not_fooled_by_a_symbol_name():
    asm = _asm(_sum_named_prefetch_but_without_it, np.arange(10.0))
    assert "prefetch" in asm  # the function's own name: what the old check accepted
    assert not _PREFETCH_INSTRUCTION.search(asm)
