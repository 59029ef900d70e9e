"""The engine step loop: schedule -> runner.execute -> update, behind a thread-safe front.

One thread loops on `step()` (sleeping in `wait_for_work` when idle); other threads (the gRPC
service) call `add_request` / `abort_request`. All scheduler state is guarded by one lock, which
`step()` releases while the runner computes so adds and aborts never wait for a forward pass. An
abort during that time frees the blocks at once; the step's results for it are then ignored.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable, Optional, Sequence

from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.scheduler.engine_stats import EngineStats
from pagedserve.scheduler.request import Request, RequestOutput, RequestStatus
from pagedserve.sampling_params import SamplingParams
from pagedserve.scheduler.scheduler import QueueFullError, Scheduler
from pagedserve.scheduler.step_io import ModelRunner, RunnerOutput
from pagedserve.scheduler.stop_checker import DetokenizerFactory

__all__ = ["EngineConfig", "EngineStats", "LLMEngine", "QueueFullError", "RequestOutput", "RequestStatus"]

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(
        self,
        runner: ModelRunner,
        config: EngineConfig,
        detokenizer_factory: Optional[DetokenizerFactory] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.runner = runner
        self.config = config
        self.clock = clock
        self.scheduler = Scheduler(config, detokenizer_factory, clock)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._num_steps = 0
        self._last_step_time_s = 0.0

    def add_request(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        request_id: Optional[str] = None,
        priority: int = 0,
    ) -> str:
        """Queue a request and return its id (generated when None).

        Raises InvalidRequestError (bad input, with the offending field) or QueueFullError.
        """
        request_id = uuid.uuid4().hex if request_id is None else request_id
        request = Request(
            request_id=request_id,
            prompt_token_ids=list(prompt_token_ids),
            sampling_params=params,
            arrival_time=self.clock(),
            priority=priority,
        )
        with self._work:
            self.scheduler.add_request(request)
            self._work.notify_all()
        return request_id

    def abort_request(self, request_id: str) -> bool:
        """Abort now: its blocks are free on return; the next step() emits its "abort" output.

        Idempotent: False when the request is unknown or already finished.
        """
        with self._work:
            aborted = self.scheduler.abort_request(request_id)
            if aborted:
                self._work.notify_all()
            return aborted

    def has_unfinished_requests(self) -> bool:
        with self._lock:
            return self.scheduler.has_unfinished_requests()

    def wait_for_work(self, timeout: Optional[float] = None) -> bool:
        """Sleep until there is something to step (or `timeout` s pass); True if there is."""
        with self._work:
            return self._work.wait_for(self.scheduler.has_unfinished_requests, timeout)

    def step(self) -> list[RequestOutput]:
        """Run one step; return this step's outputs (new tokens, finished requests).

        A runner exception finishes that step's requests with "error" and frees their blocks;
        it is logged, and the engine keeps going.
        """
        started = time.perf_counter()
        with self._lock:
            scheduler_output = self.scheduler.schedule()
        runner_output: Optional[RunnerOutput] = RunnerOutput(sampled={})
        if scheduler_output.scheduled:
            try:
                runner_output = self.runner.execute(scheduler_output)
            except Exception:
                logger.exception("model runner failed; failing the %d requests of this step",
                                 len(scheduler_output.scheduled))
                runner_output = None
        with self._lock:
            if runner_output is None:
                outputs = self.scheduler.fail_step(scheduler_output)
            else:
                outputs = self.scheduler.update_from_output(scheduler_output, runner_output)
            self._num_steps += 1
            self._last_step_time_s = time.perf_counter() - started
            self.scheduler.record_step_time(scheduler_output.num_batched_tokens, self._last_step_time_s * 1e3)
        return outputs

    def stats(self) -> EngineStats:
        with self._lock:
            s, kv = self.scheduler, self.scheduler.kv
            return EngineStats(
                num_running=s.num_running,
                num_waiting=s.num_waiting,
                num_preemptions=s.num_preemptions,
                num_blocks_used=kv.num_used_blocks(),
                num_blocks_free=kv.num_free_blocks(),
                num_blocks_total=kv.num_total_blocks(),
                kv_bytes_per_token=self.config.kv_cache_spec.bytes_per_token,
                num_prefix_queried_tokens=s.num_prefix_queried_tokens,
                num_prefix_hit_tokens=s.num_prefix_hit_tokens,
                num_window_freed_blocks=kv.num_window_freed_blocks,
                num_prefill_tokens_last_step=s.num_prefill_tokens_last_step,
                num_decode_tokens_last_step=s.num_decode_tokens_last_step,
                num_prefill_tokens=s.num_prefill_tokens,
                num_draft_tokens=s.num_draft_tokens,
                num_accepted_draft_tokens=s.num_accepted_draft_tokens,
                acceptance_length_counts=tuple(s.acceptance_length_counts),
                last_step_time_s=self._last_step_time_s,
                num_steps=self._num_steps,
                step_token_budget=s.token_budget,
                num_finished_by_reason=dict(s.num_finished_by_reason),
            )

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[RequestOutput]:
        """Offline: run until every prompt is done; one accumulated output per prompt and choice,
        in order (a prompt whose params have n > 1 gives its n choices, by index, in its place).

        Each output holds all output token ids, the full text, all logprobs and the prompt
        logprobs. Prompts beyond the waiting-queue bound are queued as room frees up.
        """
        params_list = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        request_ids: list[Optional[str]] = [None] * len(prompts)
        ours: set[str] = set()
        results: dict[tuple[str, int], RequestOutput] = {}
        num_added = 0
        num_done = 0
        while num_done < sum(p.n for p in params_list):
            while num_added < len(prompts):
                try:
                    request_ids[num_added] = self.add_request(prompts[num_added], params_list[num_added])
                except QueueFullError:
                    break
                ours.add(request_ids[num_added])
                num_added += 1
            for output in self.step():
                if output.request_id not in ours:
                    continue  # another caller's request
                key = (output.request_id, output.index)
                previous = results.get(key)
                results[key] = previous.merged_with(output) if previous else output
                num_done += output.finished
        return [results[(rid, i)] for rid, p in zip(request_ids, params_list) for i in range(p.n)]
