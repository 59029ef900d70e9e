"""The structured-output bench: both sides generate the same number of tokens (the built-in schema
is long enough that no constrained request completes before max_tokens), and every constrained
token was masked."""

from pagedserve.bench import structured_output
from pagedserve.bench.structured_output import StructuredBenchOptions
from pagedserve.engine.engine_args import EngineArgs


def test_both_sides_generate_every_token(smollm2_model):
    options = StructuredBenchOptions(concurrency=3, max_tokens=12, prompt_tokens=8, rounds=1)
    result = structured_output.run(EngineArgs(num_kv_blocks=64, kv_cache_memory=None), options,
                               model=smollm2_model)
    (only,) = result["rounds"]
    assert only["generated_tokens"] == [36, 36]
    assert result["median"]["num_masks"] >= 36 + 12  # every constrained token (and the single run's) was masked
    assert only["ratio"] > 0 and only["cold_compile_s"] > 0

