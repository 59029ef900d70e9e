"""Small model-free factories: configs, engines, requests, a checking fake runner, a fake detokenizer."""

from __future__ import annotations

from typing import Sequence

import pytest

from pagedserve.engine.engine_args import EngineArgs
from pagedserve.scheduler.engine import EngineConfig, LLMEngine
from pagedserve.scheduler.request import Request
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.scheduler import Scheduler
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.step_io import RunnerOutput, SchedulerOutput
from pagedserve.worker.request_state import RequestStates

VOCAB_SIZE = 101


def create_config(
    block_size=4,
    num_blocks=64,
    max_model_len=256,
    max_num_batched_tokens=16,
    max_num_seqs=8,
    layer_windows=(0,),
    num_kv_heads=1,
    head_dim=1,
    stop_ids=(),
    **engine_args,
) -> EngineConfig:
    """A small config (layer_windows[i] = layer i's window, 0 = full); every option not given here
    or in `engine_args` takes its EngineArgs default, as the server's does."""
    args = EngineArgs(block_size=block_size, num_kv_blocks=num_blocks, max_num_batched_tokens=max_num_batched_tokens,
                      max_num_seqs=max_num_seqs, **engine_args)
    spec = args.create_kv_cache_spec(layer_windows, num_kv_heads=num_kv_heads, head_dim=head_dim)
    return args.create_engine_config(spec, context_length=max_model_len, stop_ids=stop_ids)


class FakeDetokenizer:
    """Each id maps to a fixed string (TEXT_OF or "<id>"); push returns it at once."""

    TEXT_OF = {1: "he", 2: "llo", 3: " wo", 4: "rld", 5: "!", 6: "S", 7: "TOP", 8: "x"}

    def push(self, token_ids):
        return "".join(self.TEXT_OF.get(t, f"<{t}>") for t in token_ids)

    def flush(self):
        return ""


def assert_runner_state_matches(states: RequestStates, scheduler: Scheduler, scheduler_output: SchedulerOutput) -> None:
    """The runner's diff-built state equals what the old full-history step I/O would have sent.

    Called during a step (after `schedule`, before `update_from_output`): for every scheduled
    request, the prompt ids, output ids and block tables (null entries included) equal the
    scheduler's Request and the KV cache manager's tables, and the runner holds exactly the
    running requests (finished and preempted ones were dropped).
    """
    assert states.request_ids() == {r.request_id for r in scheduler.running}
    for r in scheduler_output.scheduled:
        truth, state = scheduler.requests[r.request_id], states[r.request_id]
        assert state.prompt_token_ids.tolist() == truth.prompt_token_ids, r.request_id
        assert state.output_token_ids.tolist() == truth.output_token_ids, r.request_id
        assert r.start_position == truth.num_computed_tokens
        tables = [row.tolist() for row in state.block_table_rows()]
        assert tables == [list(t) for t in scheduler.kv.block_tables(r.request_id)], r.request_id


class FakeRunner:
    """Deterministic 'model': next token = (sum of all context ids) % VOCAB_SIZE.

    It keeps its request states from the scheduler's diffs as the real runner does (the same
    `RequestStates`). It also simulates the KV cache: it writes each new token id into its slot of
    every group's blocks and, before sampling, reads the visible context back through the block
    tables and checks it equals the request's tokens, so a wrong block table, a bad prefix hit or a
    block reused too early fails the test (pytest.fail, which the engine does not catch). With `scheduler` set (create_engine does), every step also
    checks the states against the scheduler's truth (`assert_runner_state_matches`).
    """

    def __init__(self, config: EngineConfig, script: dict | None = None):
        self.block_size = config.block_size
        self.windows = [g.sliding_window for g in config.kv_cache_spec.groups]
        self.kv = [dict() for _ in self.windows]  # group -> {block_id: [token ids]}
        self.script = script or {}  # request_id -> list of tokens to emit instead
        self.states = RequestStates(len(self.windows), seed_for=lambda request_id: 0)
        self.scheduler: Scheduler | None = None
        self.num_calls = 0
        self.fail_on_call: int | None = None
        self.batches: list[list[tuple[str, int, int]]] = []  # (request_id, start, num_tokens)
        self.outputs: list[SchedulerOutput] = []
        # Speculative decoding: proposer(request_id, context ids, n) -> drafts (None: proposes none).
        # Drafts are verified by the same rule as real tokens: accepted while each equals the token
        # the 'model' gives after the context and the drafts before it.
        self.proposer = None
        self.max_lookahead = config.num_speculative_tokens  # a table may hold rejected drafts' slots

    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        self.num_calls += 1
        self.outputs.append(scheduler_output)
        if self.fail_on_call == self.num_calls:
            raise RuntimeError("runner exploded")
        try:
            return self._execute(scheduler_output)
        except AssertionError as error:
            # The engine turns a runner's exceptions into "error" outputs; a broken check must fail the test.
            pytest.fail(f"FakeRunner check failed: {error!r}")

    def _execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        states = self.states.update(scheduler_output)
        if self.scheduler is not None:
            assert_runner_state_matches(self.states, self.scheduler, scheduler_output)
        bs = self.block_size
        for g, pairs in enumerate(scheduler_output.blocks_to_copy):
            for src, dst in pairs:  # a forked choice's own copy of a shared partial block
                self.kv[g][dst] = list(self.kv[g][src])
        self.batches.append([(r.request_id, r.start_position, r.num_new_tokens) for r in scheduler_output.scheduled])
        sampled, prompt_logprobs = {}, {}
        extra_sampled, draft_token_ids = {}, {}
        for r, state in zip(scheduler_output.scheduled, states):
            end = r.start_position + r.num_new_tokens
            context = state.token_ids.ids.tolist() + list(r.draft_token_ids)  # drafts: at the chunk's end
            new_token_ids = context[r.start_position : end]
            for g, table in enumerate(state.block_table_rows()):
                table = table.tolist()
                assert -(-end // bs) <= len(table) <= -(-(end + self.max_lookahead) // bs), (r.request_id, g, table, end)
                assert 0 not in table[(max(0, r.start_position - self.windows[g] + 1) if self.windows[g] else 0) // bs :]
                for offset, token in enumerate(new_token_ids):
                    p = r.start_position + offset
                    self.kv[g].setdefault(table[p // bs], [None] * bs)[p % bs] = token
                first_visible = max(0, end - self.windows[g]) if self.windows[g] else 0
                seen = [self.kv[g][table[p // bs]][p % bs] for p in range(first_visible, end)]
                assert seen == context[first_visible:end], (r.request_id, g)
            if r.want_prompt_logprobs:  # as the real runner: the next prompt token, -1 past the prompt
                nexts = [context[p + 1] if p + 1 < state.num_prompt_tokens else -1 for p in range(r.start_position, end)]
                prompt_logprobs[r.request_id] = [
                    SampledToken(t, -float(p), [(t, -float(p))]) for p, t in zip(range(r.start_position, end), nexts)
                ]
            if r.sample:
                script = self.script.get(r.request_id)
                num_outputs = len(state.output_token_ids)
                known = context[:len(context) - len(r.draft_token_ids)]
                tokens = []
                for j in range(len(r.draft_token_ids) + 1):  # accept drafts while they equal the 'model'
                    if script is not None:
                        tokens.append(script[num_outputs + j])
                    else:
                        tokens.append(sum(known + list(r.draft_token_ids[:j])) % VOCAB_SIZE)
                    if j == len(r.draft_token_ids) or tokens[j] != r.draft_token_ids[j]:
                        break
                token = tokens[0]
                sampled[r.request_id] = SampledToken(token, -0.5, [(token, -0.5)])
                if r.draft_token_ids:
                    extra_sampled[r.request_id] = [SampledToken(t, -0.5, [(t, -0.5)]) for t in tokens[1:]]
                if r.num_drafts_to_propose and self.proposer is not None:
                    drafts = self.proposer(r.request_id, known + tokens, r.num_drafts_to_propose)
                    if drafts:
                        draft_token_ids[r.request_id] = list(drafts)
                for choice_id in r.fork_request_ids:  # other choices: their own script, or the same rule
                    choice_script = self.script.get(choice_id)
                    choice_token = choice_script[0] if choice_script is not None else token
                    sampled[choice_id] = SampledToken(choice_token, -0.5, [(choice_token, -0.5)])
        return RunnerOutput(sampled, prompt_logprobs, extra_sampled, draft_token_ids)


def expected_tokens(prompt: Sequence[int], max_tokens: int) -> list[int]:
    """What FakeRunner generates for `prompt` without stops."""
    context, out = list(prompt), []
    for _ in range(max_tokens):
        token = sum(context) % VOCAB_SIZE
        out.append(token)
        context.append(token)
    return out


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def create_engine(config: EngineConfig | None = None, script=None, **kwargs) -> tuple[LLMEngine, FakeRunner]:
    config = config or create_config(**kwargs)
    runner = FakeRunner(config, script)
    engine = LLMEngine(runner, config, FakeDetokenizer, clock=FakeClock())
    runner.scheduler = engine.scheduler
    return engine, runner


def create_scheduler(config: EngineConfig | None = None, **kwargs) -> Scheduler:
    return Scheduler(config or create_config(**kwargs), FakeDetokenizer, clock=FakeClock())


def create_requests(num_requests, prompt_len=10, max_tokens=4, start_id=0, **params) -> list[Request]:
    """Requests "0", "1", ... with distinct prompts [1000*i + j for j in range(prompt_len)]."""
    sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, **params)
    return [
        Request(str(i), [1000 * i + j for j in range(prompt_len)], sp, arrival_time=float(i))
        for i in range(start_id, start_id + num_requests)
    ]


def run_to_completion(engine: LLMEngine, max_steps=10_000) -> dict:
    """Step until idle; return request_id -> accumulated output."""
    results = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return results
        for out in engine.step():
            prev = results.get(out.request_id)
            results[out.request_id] = prev.merged_with(out) if prev else out
    raise AssertionError("engine did not finish")
