"""Continuous batching as vLLM v1: every step grants tokens under a budget, prefill and decode mixed.

`schedule()` serves running requests first (a decode is a grant of one token, a request still
prefilling gets a chunk), then admits waiting ones (FCFS or by priority) while the token budget
and `max_num_seqs` allow. When the cache has no room for a running request, the most recently
admitted running request (priority policy: the least important) is preempted by recompute: its
blocks are freed, its generated tokens kept, and it returns to the front of the waiting queue.
A request that cannot fit even when it is the only one holding blocks finishes with "length".

An n-choice request (`sampling_params.n > 1`) is admitted as one request that is choice 0 and
reserves room for all n sequences under `max_num_seqs`. The step that samples its first token also
samples the first token of choices 1..n-1 from the same logits; `update_from_output` then forks
them: each is a request of its own (`Request.parent_id`) that shares the prompt's KV blocks (see
`KVCacheManager.fork`), so the prompt is computed once. From there every choice runs, stops, is
preempted and recomputed on its own; aborting the request aborts all its choices.

Speculative decoding (pagedserve/spec/__init__.py has the whole design): a decoding request with
drafts (`Request.draft_token_ids`, proposed by the runner after its previous step) is granted
1 + d tokens, d of them drafts (`spec_policy.SpecPolicy` decides d), and the KV manager allocates
slots for all of them. After the step only what the model accepted counts: `num_computed_tokens`
advances over the last known token and the accepted drafts, never over a rejected one, so the next
step writes over the rejected drafts' slots; the prefix cache only hashes full blocks below
`num_computed_tokens`, and the sliding window only drops blocks behind it, so neither ever acts on
an unverified token. Each accepted token goes through the stop checks in order and the first stop
ends the request there.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Optional

from pagedserve.cache.kv_cache_manager import KVCacheManager
from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.scheduler.request import (CHOICE_ID_SEPARATOR, Request, RequestOutput, RequestStatus,
                                          choice_request_id)
from pagedserve.scheduler.request_queue import WaitingQueue
from pagedserve.scheduler.runner_sync import RunnerSync
from pagedserve.scheduler.spec_policy import SpecPolicy
from pagedserve.scheduler.step_time_budget import StepBudgetControl, StepCost
from pagedserve.sampling_params import InvalidRequestError
from pagedserve.scheduler.step_io import RunnerOutput, ScheduledRequest, SchedulerOutput
from pagedserve.sampled_token import SampledToken
from pagedserve.scheduler.stop_checker import DetokenizerFactory, StopChecker


def _accepted_drafts_agree(draft_token_ids, sampled: SampledToken, extra) -> bool:
    """The runner's contract for a step with drafts: one extra token per accepted draft, and every
    accepted draft equals the token sampled at the position before it."""
    tokens = [sampled, *extra][:len(extra)]
    return len(extra) <= len(draft_token_ids) and all(t.token_id == d for t, d in zip(tokens, draft_token_ids))


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
        self.choices: dict[str, list[str]] = {}  # n-choice request id -> ids of its unfinished forked choices
        self._pending_outputs: list[RequestOutput] = []  # finished outside a step's update
        self.num_preemptions = 0
        self.num_prefix_queried_tokens = 0
        self.num_prefix_hit_tokens = 0
        self.num_prefill_tokens_last_step = 0
        self.num_decode_tokens_last_step = 0
        self.num_prefill_tokens = 0  # total prompt (and recomputed) tokens computed, prefix hits excluded
        self.num_finished_by_reason: collections.Counter[str] = collections.Counter()
        self.spec_policy = SpecPolicy(config.num_speculative_tokens, config.speculative_max_batch_tokens,
                                      config.step_fixed_tokens)
        # The step budget that follows time, when the warm-up measured the step's cost line.
        self.step_budget: Optional[StepBudgetControl] = None
        if config.max_step_ms > 0 and config.step_per_token_ms > 0:
            self.step_budget = StepBudgetControl(
                StepCost(config.step_fixed_ms, config.step_per_token_ms), config.max_step_ms,
                min_tokens=min(config.block_size, config.max_num_batched_tokens),
                max_tokens=config.max_num_batched_tokens)
        self.num_draft_tokens = 0  # total drafts verified
        self.num_accepted_draft_tokens = 0  # total of those the model accepted
        # acceptance_length_counts[a]: verify steps that accepted exactly a drafts
        self.acceptance_length_counts: list[int] = [0] * (config.num_speculative_tokens + 1)

    # ---- admission ----
    def add_request(self, request: Request) -> None:
        """Queue a request, or raise InvalidRequestError / QueueFullError saying why not."""
        cfg, params = self.config, request.sampling_params
        if request.request_id in self.requests or request.request_id in self.choices:
            raise InvalidRequestError("request_id", f"request id {request.request_id!r} is already in use")
        if CHOICE_ID_SEPARATOR in request.request_id:
            raise InvalidRequestError("request_id", "request ids must not contain the character U+001F")
        if params.n > cfg.max_num_seqs:
            raise InvalidRequestError(
                "n", f"n={params.n} choices run as {params.n} sequences, more than max_num_seqs={cfg.max_num_seqs}"
            )
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
        """Finish the request (every unfinished choice of it) as "abort" and free its blocks now;
        False if unknown or finished.

        Its final outputs are delivered by the next `update_from_output`.
        """
        members = [self.requests.get(request_id)] + [self.requests.get(c) for c in self.choices.get(request_id, ())]
        members = [r for r in members if r is not None]
        for request in members:
            self._finish(request, RequestStatus.FINISHED_ABORTED)
            self._pending_outputs.append(RequestOutput.of(request))
        return bool(members)

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
        budget = self.token_budget
        self.num_prefill_tokens_last_step = 0
        self.num_decode_tokens_last_step = 0
        grants: dict[str, int] = {}  # request_id -> tokens granted, in batch order
        num_drafts_of: dict[str, int] = {}  # request_id -> drafts among its granted tokens
        draft_room = self.spec_policy.step_room(len(self.running))
        preempted = False

        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_new = self._num_tokens_to_grant(request, budget)
            num_drafts = 0
            if num_new == 1 and request.num_tokens - request.num_computed_tokens == 1:  # a decode
                num_drafts = self.spec_policy.num_drafts_to_verify(request, draft_room, budget)
            if num_new <= 0:  # defensive: a running request always has a token to compute
                index += 1
                continue
            granted = True
            while not self.kv.allocate_slots(request, num_new + num_drafts):
                if num_drafts:  # drafts never cost a preemption: decode without them
                    num_drafts = 0
                    continue
                victim = self._pick_victim()
                if victim is request and len(self.running) == 1:
                    self._finish_outside_step(request, RequestStatus.FINISHED_LENGTH)  # outgrew the cache
                    granted = False
                    break
                victim_index = self.running.index(victim)
                self._preempt(victim)
                preempted = True
                budget += grants.pop(victim.request_id, 0)
                draft_room += num_drafts_of.pop(victim.request_id, 0)
                if victim_index < index:
                    index -= 1
                if victim is request:
                    granted = False
                    break
            if granted:
                grants[request.request_id] = num_new + num_drafts
                budget -= num_new + num_drafts
                if num_drafts:
                    num_drafts_of[request.request_id] = num_drafts
                    draft_room -= num_drafts
                index += 1

        # No admissions in a step that had to preempt: the cache is full. An n-choice request not
        # yet forked counts as its n sequences.
        num_seqs = len(self.running) + sum(r.num_choices_to_fork for r in self.running)
        while not preempted and self.waiting and budget > 0 and num_seqs < self.config.max_num_seqs:
            request = self.waiting.peek()
            if num_seqs + 1 + request.num_choices_to_fork > self.config.max_num_seqs:
                break
            hits, num_cached = ((), 0)
            # cached positions compute no logits: a request still owed its prompt logprobs takes no hits
            if request.sampling_params.prompt_logprobs == 0 or request.prompt_logprobs_delivered:
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
            num_seqs += 1 + request.num_choices_to_fork
            grants[request.request_id] = num_new
            budget -= num_new

        blocks_to_copy = self.kv.take_blocks_to_copy()
        if not grants:
            return SchedulerOutput()  # drops wait for a step that runs; no copy is queued without a grant
        new_requests = []
        for rid in grants:
            if not self.runner_sync.holds(rid):
                new_requests.append(self.runner_sync.new_request(self.requests[rid]))
        for request in self.running:  # a paused request (auto mode) counts its steps without drafts
            if request.request_id in grants and request.request_id not in num_drafts_of:
                request.draft_tracker.step_without_drafts()
        return SchedulerOutput(
            scheduled=tuple(self._scheduled(self.requests[rid], n, num_drafts_of.get(rid, 0))
                            for rid, n in grants.items()),
            new_requests=tuple(new_requests),
            finished_request_ids=self.runner_sync.take_dropped(),
            blocks_to_copy=blocks_to_copy,
        )

    def update_from_output(self, scheduler_output: SchedulerOutput, runner_output: RunnerOutput) -> list[RequestOutput]:
        """Apply a step's results: advance, append sampled tokens, stop, free, cache full blocks."""
        outputs, self._pending_outputs = self._pending_outputs, []
        for scheduled in scheduler_output.scheduled:
            request = self.requests.get(scheduled.request_id)
            if request is None or request.status is not RequestStatus.RUNNING:
                continue  # aborted while the step ran
            request.num_computed_tokens += scheduled.num_known_tokens  # drafts count once accepted
            prompt_logprobs = self._collect_prompt_logprobs(request, scheduled, runner_output)
            changes: dict = {}
            finish: Optional[RequestStatus] = None
            choice_outputs: list[RequestOutput] = []
            if scheduled.sample:
                sampled = runner_output.sampled.get(request.request_id)
                extra = runner_output.extra_sampled.get(request.request_id, ())
                if (sampled is None or any(c not in runner_output.sampled for c in scheduled.fork_request_ids)
                        or not _accepted_drafts_agree(scheduled.draft_token_ids, sampled, extra)):
                    finish = RequestStatus.FINISHED_ERROR  # the runner broke its contract
                else:
                    changes, finish = self._append_tokens(request, [sampled, *extra])
                    self._record_drafts(request, scheduled, len(extra), runner_output, finish)
            elif request.sampling_params.max_tokens == 0 and request.num_computed_tokens >= request.num_tokens:
                finish = RequestStatus.FINISHED_LENGTH  # scoring only: the prompt is done
                changes = dict(new_text=request.stop_checker.finish_text())
            self.kv.cache_full_blocks(request)  # only blocks below num_computed_tokens: verified tokens
            if scheduled.fork_request_ids and finish is not RequestStatus.FINISHED_ERROR:  # before a finish frees
                choice_outputs = self._fork(request, scheduled.fork_request_ids, runner_output)  # the shared blocks
            if finish is not None:
                self._finish(request, finish)
            if scheduled.sample or finish is not None or prompt_logprobs is not None:
                outputs.append(RequestOutput.of(request, prompt_logprobs=prompt_logprobs, **changes))
            outputs.extend(choice_outputs)
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
    @property
    def token_budget(self) -> int:
        """Tokens the next step may compute: the configured budget, or the time-following one. That
        one shrinks prefill chunks, never the running requests' one token each (up to the
        configured budget): a decode left out of a step would wait a whole step more."""
        if self.step_budget is None:
            return self.config.max_num_batched_tokens
        return max(self.step_budget.budget, min(len(self.running), self.config.max_num_batched_tokens))

    def record_step_time(self, num_tokens: int, step_ms: float) -> None:
        """A step computed `num_tokens` tokens in `step_ms` (the time-following budget adjusts)."""
        if self.step_budget is not None:
            self.step_budget.observe(num_tokens, step_ms)

    def _chunk_cap(self) -> int:
        threshold = self.config.long_prefill_token_threshold
        return threshold if threshold > 0 else self.token_budget

    def _num_tokens_to_grant(self, request: Request, budget: int) -> int:
        return min(request.num_tokens - request.num_computed_tokens, self._chunk_cap(), budget)

    def _scheduled(self, request: Request, num_new: int, num_drafts: int) -> ScheduledRequest:
        start = request.num_computed_tokens
        end = start + num_new - num_drafts  # past the request's own tokens of the chunk
        is_decode = num_new - num_drafts == 1 and request.num_output_tokens > 0 and end == request.num_tokens
        if is_decode:
            self.num_decode_tokens_last_step += num_new
        else:
            self.num_prefill_tokens_last_step += num_new
            self.num_prefill_tokens += num_new
        params = request.sampling_params
        sample = end == request.num_tokens and params.max_tokens > 0
        fork_request_ids: tuple[str, ...] = ()
        if sample and request.num_choices_to_fork and request.num_output_tokens == 0:
            fork_request_ids = tuple(choice_request_id(request.request_id, i) for i in range(1, params.n))
        num_to_propose = 0
        if sample and not fork_request_ids:
            num_to_propose = self.spec_policy.num_to_propose(request, len(self.running))
        return self.runner_sync.scheduled(
            request,
            num_new,
            sample=sample,
            want_prompt_logprobs=params.prompt_logprobs > 0
            and not request.prompt_logprobs_delivered
            and start < request.num_prompt_tokens,
            fork_request_ids=fork_request_ids,
            draft_token_ids=tuple(request.draft_token_ids[:num_drafts]),
            num_drafts_to_propose=num_to_propose,
        )

    def _fork(self, parent: Request, choice_ids: tuple[str, ...], runner_output: RunnerOutput) -> list[RequestOutput]:
        """Create choices 1..n-1 of `parent`, whose prompt was just computed: each shares the
        prompt's blocks, starts with the first token the runner sampled for it, and runs on."""
        parent.forked = True
        cfg, outputs = self.config, []
        for index, choice_id in enumerate(choice_ids, start=1):
            params = parent.sampling_params.for_choice(index)
            choice = Request(choice_id, parent.prompt_token_ids, params, arrival_time=parent.arrival_time,
                             priority=parent.priority, parent_id=parent.request_id, index=index)
            detokenizer = self.detokenizer_factory() if self.detokenizer_factory else None
            choice.stop_checker = StopChecker(params, cfg.stop_ids, cfg.max_model_len, detokenizer)
            choice.num_computed_tokens = parent.num_computed_tokens
            choice.num_cached_tokens = parent.num_cached_tokens
            choice.first_scheduled_time = parent.first_scheduled_time
            choice.status = RequestStatus.RUNNING
            self.kv.fork(parent, choice_id)
            self.requests[choice_id] = choice
            self.running.append(choice)
            self.choices.setdefault(parent.request_id, []).append(choice_id)
            changes, finish = self._append_token(choice, runner_output.sampled[choice_id])
            if finish is not None:
                self._finish(choice, finish)
            outputs.append(RequestOutput.of(choice, **changes))
        return outputs

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
        request.draft_token_ids = []
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.add_preempted(request)

    def _append_tokens(self, request: Request, tokens) -> tuple[dict, Optional[RequestStatus]]:
        """Append a step's tokens in order, each through the stop checks; the first stop ends it
        (later tokens are dropped). Every token after the first was sampled at the position of an
        accepted draft, whose KV the step computed: `num_computed_tokens` advances over it."""
        new_token_ids, new_logprobs, texts = [], [], []
        finish = None
        for i, sampled in enumerate(tokens):
            if i > 0:
                request.num_computed_tokens += 1
            change, finish = self._append_token(request, sampled)
            new_token_ids += change["new_token_ids"]
            new_logprobs += change["new_logprobs"]
            texts.append(change["new_text"])
            if finish is not None:
                break
        return dict(new_token_ids=new_token_ids, new_text="".join(texts), new_logprobs=new_logprobs), finish

    def _record_drafts(self, request: Request, scheduled: ScheduledRequest, num_accepted: int,
                       runner_output: RunnerOutput, finish: Optional[RequestStatus]) -> None:
        """Count the step's verified drafts and keep the runner's new ones for the next step."""
        num_drafts = len(scheduled.draft_token_ids)
        if num_drafts:
            request.draft_tracker.record(num_drafts, num_accepted)
            self.num_draft_tokens += num_drafts
            self.num_accepted_draft_tokens += num_accepted
            counts = self.acceptance_length_counts  # a request's own k may exceed the engine's
            counts.extend([0] * (num_accepted + 1 - len(counts)))
            counts[num_accepted] += 1
        drafts = runner_output.draft_token_ids.get(request.request_id) if finish is None else None
        request.draft_token_ids = list(drafts) if drafts else []

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
        """Mark finished, free every block, drop from the queues. An n-choice request that had not
        forked yet also queues a finished output (same reason, no tokens) for each choice it will
        never fork, so every choice of every request ends with a finished output."""
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self.kv.free(request)
        self.runner_sync.forget(request.request_id)
        request.status = status
        request.finish_time = self.clock()
        self.requests.pop(request.request_id, None)
        if request.num_choices_to_fork:  # finished before its prompt was done: its choices end with it
            self._pending_outputs.extend(
                RequestOutput.of(request, index=i, num_output_tokens=0, first_token_time=None, stop_reason=None)
                for i in range(1, request.sampling_params.n)
            )
        siblings = self.choices.get(request.parent_id) if request.parent_id is not None else None
        if siblings is not None:
            siblings.remove(request.request_id)
            if not siblings:
                del self.choices[request.parent_id]
        self.num_finished_by_reason[status.finish_reason] += 1

    def _finish_outside_step(self, request: Request, status: RequestStatus) -> None:
        self._finish(request, status)
        text = request.stop_checker.finish_text() if request.stop_checker else ""
        self._pending_outputs.append(RequestOutput.of(request, new_text=text))
