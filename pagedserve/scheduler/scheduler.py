"""Continuous batching as vLLM v1: every step grants tokens under a budget, prefill and decode mixed.

`schedule()` serves running requests first (a decode is a grant of one token, a request still
prefilling gets a chunk), then admits waiting ones (FCFS or by priority) while the token budget
and `max_num_seqs` allow. When the cache has no room for a running request, the most recently
admitted running request (priority policy: the least important) is preempted by recompute: its
blocks are freed, its generated tokens kept, and it returns to the front of the waiting queue.
A request that cannot fit even when it is the only one holding blocks finishes with "length".
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Optional

from pagedserve.cache.kv_cache_manager import KVCacheManager
from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.scheduler.request import Request, RequestOutput, RequestStatus
from pagedserve.scheduler.request_queue import WaitingQueue
from pagedserve.scheduler.runner_sync import RunnerSync
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.scheduler.step_io import RunnerOutput, ScheduledRequest, SchedulerOutput
from pagedserve.scheduler.stop_checker import DetokenizerFactory, StopChecker


class QueueFullError(RuntimeError):
    """The waiting queue is at `max_waiting`: retry later (RESOURCE_EXHAUSTED)."""


class Scheduler:
    def __init__(
        self,
        config: EngineConfig,
        detokenizer_factory: Optional[DetokenizerFactory] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.detokenizer_factory = detokenizer_factory
        self.clock = clock
        self.kv = KVCacheManager(config.kv_cache_spec, config.enable_prefix_caching)
        self.runner_sync = RunnerSync(self.kv)  # what the runner holds: steps send only diffs
        self.requests: dict[str, Request] = {}  # every unfinished request
        self.waiting = WaitingQueue(config.scheduling_policy)
        self.running: list[Request] = []  # admission order
        self._pending_outputs: list[RequestOutput] = []  # finished outside a step's update
        self.num_preemptions = 0
        self.num_prefix_queried_tokens = 0
        self.num_prefix_hit_tokens = 0
        self.num_prefill_tokens_last_step = 0
        self.num_decode_tokens_last_step = 0
        self.num_finished_by_reason: collections.Counter[str] = collections.Counter()

    # ---- admission ----
    def add_request(self, request: Request) -> None:
        """Queue a request, or raise InvalidRequestError / QueueFullError saying why not."""
        cfg, params = self.config, request.sampling_params
        if request.request_id in self.requests:
            raise InvalidRequestError("request_id", f"request id {request.request_id!r} is already in use")
        num_prompt = request.num_prompt_tokens
        if num_prompt == 0:
            raise InvalidRequestError("prompt", "the prompt is empty: at least one token is needed")
        if num_prompt > cfg.max_model_len:
            raise InvalidRequestError(
                "prompt", f"the prompt has {num_prompt} tokens, more than max_model_len={cfg.max_model_len}"
            )
        if num_prompt + params.max_tokens > cfg.max_model_len:
            raise InvalidRequestError(
                "max_tokens",
                f"prompt ({num_prompt} tokens) + max_tokens ({params.max_tokens}) exceeds "
                f"max_model_len={cfg.max_model_len}",
            )
        needed = self.kv.max_blocks_needed(num_prompt, cfg.max_num_batched_tokens)
        for g, (num_needed, num_total) in enumerate(zip(needed, self.kv.num_total_blocks())):
            if num_needed > num_total:
                raise InvalidRequestError(
                    "prompt",
                    f"the prompt has {num_prompt} tokens and needs {num_needed} KV blocks in group {g}, "
                    f"but the whole cache has {num_total} blocks of {cfg.block_size} tokens",
                )
        if params.stop and self.detokenizer_factory is None:
            raise InvalidRequestError("stop", "stop strings need a detokenizer, and this engine has none")
        if len(self.waiting) >= cfg.max_waiting:
            raise QueueFullError(f"the waiting queue is full ({cfg.max_waiting} requests); retry later")
        detokenizer = self.detokenizer_factory() if self.detokenizer_factory else None
        request.stop_checker = StopChecker(params, cfg.stop_ids, cfg.max_model_len, detokenizer)
        request.status = RequestStatus.WAITING
        self.requests[request.request_id] = request
        self.waiting.add(request)

    def abort_request(self, request_id: str) -> bool:
        """Finish the request as "abort" and free its blocks now; False if unknown or finished.

        Its final output is delivered by the next `update_from_output`.
        """
        request = self.requests.get(request_id)
        if request is None:
            return False
        self._finish(request, RequestStatus.FINISHED_ABORTED)
        self._pending_outputs.append(RequestOutput.of(request))
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or bool(self._pending_outputs)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # ---- one step ----
    def schedule(self) -> SchedulerOutput:
        """Decide this step's batch; blocks for every granted token are allocated on return."""
        budget = self.config.max_num_batched_tokens
        self.num_prefill_tokens_last_step = 0
        self.num_decode_tokens_last_step = 0
        grants: dict[str, int] = {}  # request_id -> tokens granted, in batch order
        preempted = False

        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_new = self._num_tokens_to_grant(request, budget)
            if num_new <= 0:  # defensive: a running request always has a token to compute
                index += 1
                continue
            granted = True
            while not self.kv.allocate_slots(request, num_new):
                victim = self._pick_victim()
                if victim is request and len(self.running) == 1:
                    self._finish_outside_step(request, RequestStatus.FINISHED_LENGTH)  # outgrew the cache
                    granted = False
                    break
                victim_index = self.running.index(victim)
                self._preempt(victim)
                preempted = True
                budget += grants.pop(victim.request_id, 0)
                if victim_index < index:
                    index -= 1
                if victim is request:
                    granted = False
                    break
            if granted:
                grants[request.request_id] = num_new
                budget -= num_new
                index += 1

        # No admissions in a step that had to preempt: the cache is full.
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting.peek()
            hits, num_cached = ((), 0)
            if request.sampling_params.prompt_logprobs == 0:  # cached positions compute no logits
                hits, num_cached = self.kv.get_computed_blocks(request)
            request.num_computed_tokens = 0
            num_new = min(request.num_tokens - num_cached, self._chunk_cap(), budget)
            if not self.kv.allocate_slots(request, num_new, hits):
                if not self.running:  # nothing else holds blocks: it can never fit
                    self.waiting.pop()
                    self._finish_outside_step(request, RequestStatus.FINISHED_LENGTH)
                    continue
                break
            self.waiting.pop()
            self.num_prefix_queried_tokens += request.num_tokens
            self.num_prefix_hit_tokens += num_cached
            request.num_computed_tokens = num_cached
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_cached
            if request.first_scheduled_time is None:
                request.first_scheduled_time = self.clock()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            grants[request.request_id] = num_new
            budget -= num_new

        if not grants:
            return SchedulerOutput()  # drops wait for a step that runs
        new_requests = []
        for rid in grants:
            if not self.runner_sync.holds(rid):
                new_requests.append(self.runner_sync.new_request(self.requests[rid]))
        return SchedulerOutput(
            scheduled=tuple(self._scheduled(self.requests[rid], n) for rid, n in grants.items()),
            new_requests=tuple(new_requests),
            finished_request_ids=self.runner_sync.take_dropped(),
        )

    def update_from_output(self, scheduler_output: SchedulerOutput, runner_output: RunnerOutput) -> list[RequestOutput]:
        """Apply a step's results: advance, append sampled tokens, stop, free, cache full blocks."""
        outputs, self._pending_outputs = self._pending_outputs, []
        for scheduled in scheduler_output.scheduled:
            request = self.requests.get(scheduled.request_id)
            if request is None or request.status is not RequestStatus.RUNNING:
                continue  # aborted while the step ran
            request.num_computed_tokens += scheduled.num_new_tokens
            prompt_logprobs = self._collect_prompt_logprobs(request, scheduled, runner_output)
            self.kv.cache_full_blocks(request)
            changes: dict = {}
            finish: Optional[RequestStatus] = None
            if scheduled.sample:
                sampled = runner_output.sampled.get(request.request_id)
                if sampled is None:
                    finish = RequestStatus.FINISHED_ERROR  # the runner broke its contract
                else:
                    changes, finish = self._append_token(request, sampled)
            elif request.sampling_params.max_tokens == 0 and request.num_computed_tokens >= request.num_tokens:
                finish = RequestStatus.FINISHED_LENGTH  # scoring only: the prompt is done
                changes = dict(new_text=request.stop_checker.finish_text())
            if finish is not None:
                self._finish(request, finish)
            if scheduled.sample or finish is not None or prompt_logprobs is not None:
                outputs.append(RequestOutput.of(request, prompt_logprobs=prompt_logprobs, **changes))
        return outputs

    def fail_step(self, scheduler_output: SchedulerOutput) -> list[RequestOutput]:
        """The runner raised: every live request of the step finishes with "error"."""
        outputs, self._pending_outputs = self._pending_outputs, []
        self.runner_sync.step_failed(scheduler_output.finished_request_ids)
        for scheduled in scheduler_output.scheduled:
            request = self.requests.get(scheduled.request_id)
            if request is not None:
                self._finish(request, RequestStatus.FINISHED_ERROR)
                outputs.append(RequestOutput.of(request))
        return outputs

    # ---- internals ----
    def _chunk_cap(self) -> int:
        threshold = self.config.long_prefill_token_threshold
        return threshold if threshold > 0 else self.config.max_num_batched_tokens

    def _num_tokens_to_grant(self, request: Request, budget: int) -> int:
        return min(request.num_tokens - request.num_computed_tokens, self._chunk_cap(), budget)

    def _scheduled(self, request: Request, num_new: int) -> ScheduledRequest:
        start = request.num_computed_tokens
        end = start + num_new
        is_decode = num_new == 1 and request.num_output_tokens > 0 and end == request.num_tokens
        if is_decode:
            self.num_decode_tokens_last_step += 1
        else:
            self.num_prefill_tokens_last_step += num_new
        params = request.sampling_params
        return self.runner_sync.scheduled(
            request,
            num_new,
            sample=end == request.num_tokens and params.max_tokens > 0,
            want_prompt_logprobs=params.prompt_logprobs > 0
            and not request.prompt_logprobs_delivered
            and start < request.num_prompt_tokens,
        )

    def _pick_victim(self) -> Request:
        if self.config.scheduling_policy == "priority":
            return max(self.running, key=lambda r: r.sort_key)
        return self.running[-1]

    def _preempt(self, request: Request) -> None:
        """Recompute preemption: free the blocks, keep the tokens, go back to waiting."""
        self.running.remove(request)
        self.kv.free(request)
        self.runner_sync.forget(request.request_id)
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.add_preempted(request)

    def _append_token(self, request: Request, sampled) -> tuple[dict, Optional[RequestStatus]]:
        request.append_output_token(sampled.token_id)
        if request.first_token_time is None:
            request.first_token_time = self.clock()
        new_logprobs = []
        if request.sampling_params.logprobs > 0:
            request.output_logprobs.append(sampled)
            new_logprobs = [sampled]
        result = request.stop_checker.append(sampled.token_id, request.num_output_tokens, request.num_tokens)
        finish = None
        if result.finish_reason is not None:
            request.stop_reason = result.stop_reason
            finish = RequestStatus.FINISHED_STOPPED if result.finish_reason == "stop" else RequestStatus.FINISHED_LENGTH
        changes = dict(new_token_ids=[sampled.token_id], new_text=result.new_text, new_logprobs=new_logprobs)
        return changes, finish

    def _collect_prompt_logprobs(self, request, scheduled, runner_output) -> Optional[list]:
        if not scheduled.want_prompt_logprobs:
            return None
        chunk = runner_output.prompt_logprobs.get(request.request_id, [])
        return request.add_prompt_logprobs(scheduled.start_position, chunk)

    def _finish(self, request: Request, status: RequestStatus) -> None:
        """Mark finished, free every block, drop from the queues."""
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self.kv.free(request)
        self.runner_sync.forget(request.request_id)
        request.status = status
        request.finish_time = self.clock()
        self.requests.pop(request.request_id, None)
        self.num_finished_by_reason[status.finish_reason] += 1

    def _finish_outside_step(self, request: Request, status: RequestStatus) -> None:
        self._finish(request, status)
        text = request.stop_checker.finish_text() if request.stop_checker else ""
        self._pending_outputs.append(RequestOutput.of(request, new_text=text))
