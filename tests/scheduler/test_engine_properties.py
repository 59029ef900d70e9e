"""Random interleavings of add / step / abort on a tiny cache: no leaks, no double frees, all end."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagedserve.scheduler.engine import LLMEngine, QueueFullError
from pagedserve.sampling_params import InvalidRequestError, SamplingParams
from tests.scheduler.factories import create_config, create_engine, expected_tokens

SHARED_PREFIX = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]

ops = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 16), st.integers(0, 20), st.booleans() | st.just(True), st.integers(0, 2)),
    st.tuples(st.just("step")),
    st.tuples(st.just("step")),
    st.tuples(st.just("abort"), st.integers(0, 30)),
)


def check_invariants(engine: LLMEngine) -> None:
    kv = engine.scheduler.kv
    for g, pool in enumerate(kv.pools):
        refs = [0] * pool.num_blocks
        for state in kv._requests.values():
            for block_id in state.block_tables[g]:
                if block_id:
                    refs[block_id] += 1
        assert refs == pool.ref_counts  # every reference accounted for, none negative, null untouched
        free = pool.free_block_ids()
        assert len(free) == len(set(free))
        assert set(free) == {b for b in range(1, pool.num_blocks) if pool.ref_counts[b] == 0}
    assert set(kv._requests) == {r.request_id for r in engine.scheduler.running}
    assert len(engine.scheduler.running) <= engine.config.max_num_seqs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=st.lists(ops, min_size=5, max_size=60),
    layer_windows=st.sampled_from([(0,), (6,), (0, 6)]),
    policy=st.sampled_from(["fcfs", "priority"]),
    prefix=st.booleans(),
    num_blocks=st.integers(6, 12),
    block_size=st.sampled_from([2, 4]),
    budget=st.integers(3, 16),
    max_num_seqs=st.integers(1, 4),
)
def test_random_interleavings_keep_the_cache_consistent(
    operations, layer_windows, policy, prefix, num_blocks, block_size, budget, max_num_seqs
):
    config = create_config(
        block_size=block_size,
        num_blocks=num_blocks,
        max_model_len=40,
        max_num_batched_tokens=budget,
        max_num_seqs=max_num_seqs,
        max_waiting=4,
        layer_windows=layer_windows,
        scheduling_policy=policy,
        enable_prefix_caching=prefix,
    )
    engine, _ = create_engine(config)
    added: dict[str, list[int]] = {}
    outputs: dict[str, list] = {}

    def collect(step_outputs):
        for out in step_outputs:
            assert out.request_id in added
            assert not (outputs.get(out.request_id) and outputs[out.request_id][-1].finished)
            outputs.setdefault(out.request_id, []).append(out)

    for op in operations:
        if op[0] == "add":
            _, prompt_len, max_tokens, share, priority = op
            prompt = (SHARED_PREFIX if share else []) + [(len(added) * 7 + j) % 90 + 1 for j in range(prompt_len)]
            try:
                rid = engine.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens),
                                         request_id=f"r{len(added)}", priority=priority)
                added[rid] = prompt
            except (InvalidRequestError, QueueFullError):
                pass
        elif op[0] == "step":
            collect(engine.step())
        else:
            ids = list(added)
            if ids:
                engine.abort_request(ids[op[1] % len(ids)])
        check_invariants(engine)

    for _ in range(2000):
        if not engine.has_unfinished_requests():
            break
        collect(engine.step())
        check_invariants(engine)
    assert not engine.has_unfinished_requests()

    for rid, prompt in added.items():
        assert outputs[rid][-1].finished  # every request ends, exactly once (checked in collect)
        tokens = [t for out in outputs[rid] for t in out.new_token_ids]
        assert tokens == expected_tokens(prompt, len(tokens))  # preemption / prefix hits change nothing
    stats = engine.stats()
    assert stats.num_blocks_used == (0,) * len(stats.num_blocks_used)
    assert stats.num_blocks_free == stats.num_blocks_total  # cached-but-free blocks count as free
    assert engine.scheduler.kv._block_hashes == {}
