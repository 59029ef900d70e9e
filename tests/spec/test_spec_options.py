"""The per-request speculative option: proto -> SamplingParams, and SamplingParams' own check."""

import pytest

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.sampling_params import SPECULATIVE_AUTO, SPECULATIVE_OFF, InvalidRequestError, SamplingParams
from pagedserve.service.request_validation import speculative


@pytest.mark.parametrize("options, want", [
    (pb.SpeculativeOptions(), SPECULATIVE_AUTO),
    (pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_AUTO), SPECULATIVE_AUTO),
    (pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_OFF), SPECULATIVE_OFF),
    (pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_FIXED, num_draft_tokens=1), 1),
    (pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_FIXED, num_draft_tokens=16), 16),
])
def test_proto_options_map_to_sampling_params(options, want):
    assert speculative(options) == want
    assert pb.GenerateRequest().speculative.mode == pb.SPECULATIVE_MODE_UNSPECIFIED  # unset: auto


@pytest.mark.parametrize("value", [-2, 17])
def test_sampling_params_refuse_bad_values_naming_the_field(value):
    with pytest.raises(InvalidRequestError) as error:
        SamplingParams(speculative=value)
    assert error.value.field == "speculative"
