"""The opt-in 8-bit activations at model level: the weights as views that select the 8-bit kernels.

The kernels themselves are checked against NumPy in tests/kernels/test_eight_bit_activations.py.
What the mode costs in fidelity is measured by `python -m pagedserve.bench.fidelity` (the metrics
of tests/model/test_fidelity_*.py, for both widths), not here: the 8-bit decoder layers compile in
about 60 s, more than the suite's time budget leaves.
"""

import numpy as np
import pytest

from pagedserve.model.activation_width import activation_bits_of, with_activation_bits


def test_eight_bits_are_views_of_the_same_weights(smollm2_model):
    weights = smollm2_model.weights
    assert activation_bits_of(weights) == 16
    assert with_activation_bits(weights, 16) is weights
    eight = with_activation_bits(weights, 8)
    assert activation_bits_of(eight) == 8
    for role in ("qkv", "attn_output", "gate_up", "ffn_down"):
        layer = getattr(eight.layers[3], role)
        assert layer.codes.dtype == np.int8 and np.shares_memory(layer.codes, getattr(weights.layers[3], role).codes)
        stacked = getattr(eight.stack, role)[0].codes
        assert stacked.dtype == np.int8 and np.shares_memory(stacked, layer.codes)
    assert eight.output.codes.dtype == weights.output.codes.dtype  # Q8_0 codes keep their kernel
    back = with_activation_bits(eight, 16)
    assert activation_bits_of(back) == 16 and back.layers[0].qkv.codes.dtype == np.uint8
    with pytest.raises(ValueError, match="activation bits"):
        with_activation_bits(weights, 4)
