"""A server with --speculative ngram: requests with every speculative mode stream the ids of the
offline engine without speculation, and the speculative metrics count the drafts."""

from __future__ import annotations

from pagedserve.proto.pagedserve.v1 import pagedserve_pb2 as pb
from pagedserve.sampling_params import SamplingParams
from tests.service.conftest import wait_until

# A repeated stretch: prompt lookup proposes from the first round while the model repeats it.
PROMPT = [504, 3458, 282, 4649, 314, 504, 3458, 282, 4649, 314, 504, 3458, 282]
MODES = [pb.SpeculativeOptions(), pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_OFF),
         pb.SpeculativeOptions(mode=pb.SPECULATIVE_MODE_FIXED, num_draft_tokens=5)]


def test_speculative_server_streams_the_ids_of_no_speculation(start_server, offline_engine):
    server = start_server(speculative="ngram", num_draft_tokens=4)
    [want] = offline_engine.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True))
    for options in MODES:
        request = server.client.build_request(PROMPT, temperature=0.0, max_tokens=20, ignore_eos=True)
        request.speculative.CopyFrom(options)
        ids = [i for response in server.client.generate(request, timeout=120) for i in response.token_ids]
        assert ids == list(want.new_token_ids), options
    wait_until(lambda: server.engine.stats().num_running == 0)
    stats = server.engine.stats()
    samples = server.scrape()
    assert samples["pagedserve_spec_decode_draft_tokens_total"][()] == stats.num_draft_tokens > 0
    assert samples["pagedserve_spec_decode_accepted_tokens_total"][()] == stats.num_accepted_draft_tokens > 0
