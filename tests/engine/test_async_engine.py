"""AsyncEngine driven directly: a request's life as a stream, ids per owner, draining.

Most tests run over the scheduler's fake runner behind a turnstile (GatedRunner), so each test
decides how many steps run and nothing depends on timing. One test runs the real small model.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from pagedserve.engine.async_engine import AsyncEngine
from pagedserve.engine.engine_request import EngineRequest
from pagedserve.engine.errors import DeadlineExceeded, EngineFailure, EngineNotRunning, RequestIdInUse
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.engine import LLMEngine
from tests.scheduler.factories import FakeClock, FakeDetokenizer, FakeRunner, create_config, expected_tokens

PROMPT = [3, 1, 4, 1, 5]  # fits one 16-token step: the first step prefills and samples a token


class GatedRunner:
    """FakeRunner behind a turnstile: each step's forward pass waits for a permit from the test."""

    def __init__(self, inner: FakeRunner):
        self.inner = inner
        self.num_entered = 0  # forward passes started (the one waiting for a permit included)
        self._permits = threading.Semaphore(0)
        self._entered = threading.Condition()

    def execute(self, scheduler_output):
        with self._entered:
            self.num_entered += 1
            self._entered.notify_all()
        self._permits.acquire()
        return self.inner.execute(scheduler_output)

    def allow(self, num_steps: int = 1) -> None:
        for _ in range(num_steps):
            self._permits.release()

    async def entered(self, num: int) -> None:
        """Return once `num` forward passes have started. Everything the steps before the last
        one produced has then been handed to the event loop, ahead of this return."""
        def wait():
            with self._entered:
                assert self._entered.wait_for(lambda: self.num_entered >= num, 30), "engine stalled"
        await asyncio.to_thread(wait)


class Recorder:
    """An EngineObserver that keeps what it is told."""

    def __init__(self):
        self.num_steps = 0
        self.outputs = []

    def observe_step(self, stats):
        self.num_steps += 1

    def observe_output(self, output):
        self.outputs.append(output)


def make_async_engine(observer=None, **config) -> tuple[AsyncEngine, LLMEngine, GatedRunner]:
    config = create_config(**config)
    runner = GatedRunner(FakeRunner(config))
    engine = LLMEngine(runner, config, FakeDetokenizer, clock=FakeClock())
    return AsyncEngine(engine, observer=observer), engine, runner


def run(test) -> None:
    """Run `test(async_engine, engine, runner)` on a fresh event loop with a started engine."""
    async def main():
        async_engine, engine, runner = make_async_engine()
        async_engine.start()
        try:
            await test(async_engine, engine, runner)
        finally:
            runner.allow(10_000)  # no step may stay parked in the turnstile
            await async_engine.stop()
    asyncio.run(main())


def request(max_tokens: int, request_id=None, prompt=PROMPT) -> EngineRequest:
    return EngineRequest(prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens), request_id)


async def first_output_started(stream) -> asyncio.Future:
    """Ask for the stream's first output without waiting for it; on return its request is in the
    engine (the task ran up to its first wait), so steps allowed after this can include it."""
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    return first


def text_of(token_ids) -> str:
    return FakeDetokenizer().push(token_ids)


def test_outputs_arrive_in_order_and_end_finished_real_model(make_engine, smollm2_model):
    engine = make_engine(num_kv_blocks=64)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    prompt = smollm2_model.tokenizer.encode("The capital of France is")
    want = make_engine(num_kv_blocks=64).generate([prompt], params)[0]

    async def main():
        async_engine = AsyncEngine(engine, smollm2_model)
        async_engine.start()
        try:
            return [out async for out in async_engine.generate(EngineRequest(prompt, params, "r1"))]
        finally:
            await async_engine.stop()

    outputs = asyncio.run(main())
    assert [t for out in outputs for t in out.new_token_ids] == want.new_token_ids
    assert "".join(out.new_text for out in outputs) == want.new_text
    assert [out.finished for out in outputs] == [False] * (len(outputs) - 1) + [True]
    assert outputs[-1].finish_reason == "length" and outputs[-1].num_output_tokens == 8
    assert {out.request_id for out in outputs} == {"r1"}
    assert engine.stats().num_blocks_used_all_groups == 0


def test_every_output_of_a_stream_in_order_with_caller_id():
    async def test(async_engine, engine, runner):
        runner.allow(100)
        outputs = [out async for out in async_engine.generate(request(6, "mine"))]
        tokens = [t for out in outputs for t in out.new_token_ids]
        assert tokens == expected_tokens(PROMPT, 6)
        assert "".join(out.new_text for out in outputs) == text_of(tokens)
        assert outputs[-1].finished and outputs[-1].finish_reason == "length"
        assert not any(out.finished for out in outputs[:-1])
        assert {out.request_id for out in outputs} == {"mine"}
        generated = [out.request_id async for out in async_engine.generate(request(2))]
        assert len(set(generated)) == 1 and generated[0]  # one generated id, on every output
    run(test)


def test_closing_the_stream_early_aborts_and_frees_blocks_at_once():
    async def test(async_engine, engine, runner):
        runner.allow(1)  # the prefill step only
        stream = async_engine.generate(request(50))
        async with contextlib.aclosing(stream):
            async for first in stream:
                break
            assert first.new_token_ids == expected_tokens(PROMPT, 1)
            assert engine.stats().num_blocks_used_all_groups > 0
        # the engine thread is parked inside the next forward pass; the abort does not wait for it
        assert engine.stats().num_blocks_used_all_groups == 0
        assert async_engine.num_active_streams == 0
        runner.allow(100)
        while engine.stats().num_finished_by_reason.get("abort", 0) != 1:  # the "abort" output
            await asyncio.sleep(0.01)
    run(test)


def test_breaking_out_without_closing_still_aborts_once_the_loop_finalizes_the_stream():
    async def test(async_engine, engine, runner):
        runner.allow(1)
        async for _ in async_engine.generate(request(50)):
            break  # the iterator is dropped here; asyncio closes it in a task of its own
        for _ in range(100):
            if async_engine.num_active_streams == 0:
                break
            await asyncio.sleep(0)
        assert async_engine.num_active_streams == 0
        assert engine.stats().num_blocks_used_all_groups == 0
    run(test)


def test_a_consumer_that_fell_behind_gets_one_merged_output():
    async def test(async_engine, engine, runner):
        want = expected_tokens(PROMPT, 10)
        stream = async_engine.generate(request(10))
        async with contextlib.aclosing(stream):
            runner.allow(1)
            first = await anext(stream)
            assert first.new_token_ids == want[:1]
            runner.allow(3)
            await runner.entered(5)  # steps 2-4 delivered their tokens while nobody read
            merged = await anext(stream)
            assert merged.new_token_ids == want[1:4] and merged.new_text == text_of(want[1:4])
            assert merged.num_output_tokens == 4 and not merged.finished
            runner.allow(100)
            rest = [out async for out in stream]
        assert [t for out in rest for t in out.new_token_ids] == want[4:]
        assert rest[-1].finished
    run(test)


def test_deadline_passing_mid_request_raises_and_frees_blocks():
    async def test(async_engine, engine, runner):
        stream = async_engine.generate(request(50, "late"), deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceeded):
            async with contextlib.aclosing(stream):
                async for _ in stream:  # the prefill step is parked in the turnstile
                    pass
        assert engine.stats().num_blocks_used_all_groups == 0
        assert async_engine.num_active_streams == 0
        runner.allow(100)
        while engine.stats().num_finished_by_reason.get("abort", 0) != 1:
            await asyncio.sleep(0.01)
        assert runner.inner.num_calls <= 1  # only the parked prefill ever computed
    run(test)


def test_deadline_already_passed_never_starts_the_request():
    async def test(async_engine, engine, runner):
        with pytest.raises(DeadlineExceeded):
            await anext(async_engine.generate(request(4), deadline=time.monotonic() - 1.0))
        assert not engine.has_unfinished_requests() and engine.stats().num_finished_by_reason == {}
    run(test)


def test_runner_failure_ends_the_stream_with_engine_failure():
    async def test(async_engine, engine, runner):
        runner.inner.fail_on_call = 2  # the first decode after a good prefill
        stream = async_engine.generate(request(8))
        runner.allow(1)
        assert (await anext(stream)).new_token_ids == expected_tokens(PROMPT, 1)
        runner.allow(100)
        with pytest.raises(EngineFailure, match="model runner raised"):
            await anext(stream)
        assert async_engine.num_active_streams == 0
        assert engine.stats().num_blocks_used_all_groups == 0
        again = [out async for out in async_engine.generate(request(3))]  # the engine goes on
        assert again[-1].finish_reason == "length"
    run(test)


def test_step_failure_outside_the_runner_fails_every_open_stream(monkeypatch):
    async def test(async_engine, engine, runner):
        real_schedule = engine.scheduler.schedule
        calls = []

        def fail_once():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected scheduler failure")
            return real_schedule()

        monkeypatch.setattr(engine.scheduler, "schedule", fail_once)
        runner.allow(100)
        with pytest.raises(EngineFailure, match="injected scheduler failure"):
            async for _ in async_engine.generate(request(4, "unlucky")):
                pass
        assert engine.stats().num_blocks_used_all_groups == 0 and async_engine.num_active_streams == 0
        again = [out async for out in async_engine.generate(request(3, "unlucky"))]
        assert again[-1].finish_reason == "length" and again[-1].request_id == "unlucky"
    run(test)


def test_same_id_for_two_owners_and_abort_reaches_only_the_owners_request():
    async def test(async_engine, engine, runner):
        runner.allow(1)
        alice = async_engine.generate(request(20, "x"), owner="alice")
        bob = async_engine.generate(request(20, "x"), owner="bob")
        async with contextlib.aclosing(alice), contextlib.aclosing(bob):
            assert (await anext(alice)).request_id == "x"
            bob_first = await first_output_started(bob)
            runner.allow(2)  # bob's prompt joins the second step, or the third if the second was scheduled
            assert (await bob_first).request_id == "x"
            with pytest.raises(RequestIdInUse, match="'x' is already in use"):
                await anext(async_engine.generate(request(2, "x"), owner="alice"))
            assert async_engine.abort("x", owner="mallory") is False
            assert async_engine.abort("x") is False  # the empty owner is an owner like any other
            assert async_engine.abort("x", owner="bob") is True
            runner.allow(100)
            bob_rest = [out async for out in bob]
            alice_rest = [out async for out in alice]
        assert bob_rest[-1].finish_reason == "abort"
        assert alice_rest[-1].finish_reason == "length"
        assert sum(len(out.new_token_ids) for out in alice_rest) == 19
        assert async_engine.abort("x", owner="bob") is False  # finished: nothing to abort
        assert engine.stats().num_blocks_used_all_groups == 0
    run(test)


def test_drain_counts_open_streams_and_waits_for_them():
    async def test(async_engine, engine, runner):
        assert await async_engine.wait_for_streams(0) is True
        first = async_engine.generate(request(20))
        second = async_engine.generate(request(20))
        runner.allow(1)
        await anext(first)
        second_first = await first_output_started(second)
        runner.allow(2)  # the second prompt joins the second step, or the third if the second was scheduled
        await second_first
        assert async_engine.num_active_streams == 2
        assert await async_engine.wait_for_streams(0.01) is False
        drained = asyncio.ensure_future(async_engine.wait_for_streams(30))
        await first.aclose()
        assert async_engine.num_active_streams == 1
        await asyncio.sleep(0)
        assert not drained.done()
        await second.aclose()
        assert await drained is True
    run(test)


def test_end_grace_ends_a_pending_drain():
    async def test(async_engine, engine, runner):
        stream = async_engine.generate(request(20))
        async with contextlib.aclosing(stream):
            runner.allow(1)
            await anext(stream)
            drained = asyncio.ensure_future(async_engine.wait_for_streams(30))
            await asyncio.sleep(0)
            async_engine.end_grace()
            assert await drained is False  # a stream is still open
    run(test)


def test_observer_sees_every_step_and_output_and_stopped_engine_refuses():
    async def main():
        recorder = Recorder()
        async_engine, engine, runner = make_async_engine(observer=recorder)
        with pytest.raises(EngineNotRunning):
            await anext(async_engine.generate(request(2)))
        async_engine.start()
        runner.allow(100)
        outputs = [out async for out in async_engine.generate(request(3, "seen"))]
        await async_engine.stop()
        assert not async_engine.is_running
        with pytest.raises(EngineNotRunning):
            await anext(async_engine.generate(request(2)))
        # every step output (the stream may have merged some), under the engine's own id
        assert [t for out in recorder.outputs for t in out.new_token_ids] == expected_tokens(PROMPT, 3)
        assert [t for out in outputs for t in out.new_token_ids] == expected_tokens(PROMPT, 3)
        assert len({out.request_id for out in recorder.outputs}) == 1
        assert recorder.outputs[0].request_id != "seen" and recorder.outputs[-1].finished
        assert recorder.num_steps == 3
    asyncio.run(main())


def test_n_choices_stream_interleaved_with_their_index_and_end_when_all_finished():
    async def test(async_engine, engine, runner):
        runner.allow(100)
        params = SamplingParams(temperature=0.0, max_tokens=4, n=3)
        outputs = [out async for out in async_engine.generate(EngineRequest(PROMPT, params, "multi"))]
        by_index = {}
        for out in outputs:
            assert True not in by_index.get(out.index, [])  # nothing after a choice finished
            by_index.setdefault(out.index, []).append(out.finished)
            assert out.request_id == "multi"
        assert sorted(by_index) == [0, 1, 2]
        for index in range(3):
            tokens = [t for out in outputs if out.index == index for t in out.new_token_ids]
            assert tokens == expected_tokens(PROMPT, 4), index
            assert by_index[index][-1] is True
        assert outputs[-1].finished
        assert engine.stats().num_prefill_tokens == len(PROMPT)
        assert engine.stats().num_blocks_used_all_groups == 0
    run(test)


def test_closing_an_n_choice_stream_early_aborts_every_choice():
    async def test(async_engine, engine, runner):
        runner.allow(2)  # prefill + fork, then one decode step of all 3 choices
        params = SamplingParams(temperature=0.0, max_tokens=50, n=3)
        stream = async_engine.generate(EngineRequest(PROMPT, params))
        async with contextlib.aclosing(stream):
            seen = set()
            async for out in stream:
                seen.add(out.index)
                if seen == {0, 1, 2}:
                    break
            assert engine.stats().num_running == 3
        assert engine.stats().num_blocks_used_all_groups == 0
        assert engine.stats().num_running == 0
        runner.allow(100)
        while engine.stats().num_finished_by_reason.get("abort", 0) != 3:
            await asyncio.sleep(0.01)
    run(test)
