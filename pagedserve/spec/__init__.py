"""Speculative decoding that is exact: drafts guessed cheaply, verified by the model in the batch.

Why: a single decoding stream on a CPU is bound by memory bandwidth (every step reads all the
weights for one token). Verifying d guessed tokens in the same step reads the weights once for
d + 1 positions, so every accepted guess is a token almost for free.

The pieces and who owns what (imports keep their one direction: the scheduler never sees a model
or a proposer; the runner owns the proposer):

1. Drafts (`proposer.DraftProposer`, implemented by `ngram_proposer.NgramProposer`, a Numba prompt
   lookup over all requests of a step at once: kernels/ngram_lookup.py). The runner asks the
   proposer after it sampled a step, for the requests the scheduler named
   (`ScheduledRequest.num_drafts_to_propose`), and returns the drafts
   (`RunnerOutput.draft_token_ids`). A draft model would implement the same interface.
2. Scheduling (scheduler/scheduler.py, scheduler/spec_policy.py). The scheduler keeps a request's
   drafts (`Request.draft_token_ids`) and, when the request next decodes, grants it 1 + d tokens
   of the step's budget with d drafts (`ScheduledRequest.draft_token_ids`); the KV manager
   allocates slots for all of them. After the step, `num_computed_tokens` counts the last known
   token and the accepted drafts only; rejected drafts' slots are written over by the next step
   (the blocks stay in the table). Since the prefix cache hashes only full blocks below
   `num_computed_tokens`, and the sliding window drops only blocks behind the next query position
   (`num_computed_tokens`), no unverified token ever reaches either. The accepted tokens go through
   the stop checks one by one, in order, and the first stop ends the request: no stop string,
   stop token, EOS or max_tokens is ever overrun. `spec_policy` decides when drafts pay: a step
   rule (no drafts past `speculative_max_batch_tokens` running requests: a large batch is
   compute-bound) and, in auto mode, a per-request back-off when its drafts are mostly rejected.
3. Verification (worker/draft_verification.py, called by worker/model_runner.py). The drafts are
   appended to the request's chunk, so they run through the same varlen batch as prefill chunks
   and decodes, and logits are computed at every position of the chunk. The token at position
   j is sampled exactly as a request without speculation would sample it there: the same logits
   (every kernel computes a position's values with the same float operations whatever the batch
   and chunking), the same full sampling pipeline (penalties over the outputs before it, the
   drafts before it included, temperature, top-k/top-p/min-p) and the same random number (the
   sampler's counter-based uniform of (seed, number of outputs before it)). Draft j is accepted iff
   it equals that token, and verification stops at the first disagreement, whose sampled token is
   kept (the correction); when all d drafts are accepted the token after them is the bonus.
   For greedy requests this is "longest prefix equal to the argmax, plus one". For sampled
   requests it is the standard rejection rule for a point-mass draft q = delta(x): the draft is
   accepted with probability p(x) (the sampled token equals x), and on rejection the kept token is
   distributed as p conditioned on not x, i.e. p with x removed and renormalised. Because the
   random number is the one the non-speculative run would use at that position, the output is not
   just equal in distribution: for the same seed it is the same token sequence, whatever the
   drafts, the batch or the chunking.

Requests under a structured-output constraint and n-choice requests before their fork never carry
drafts. Per-request option: `SamplingParams.speculative` (gRPC `GenerateRequest.speculative`):
auto (default), off, or a fixed k. Engine flags: `--speculative ngram --num-draft-tokens k`
(`--speculative-max-batch-tokens`, `--prompt-lookup-min/max`); off by default. Metrics:
`EngineStats.num_draft_tokens`, `num_accepted_draft_tokens`, `acceptance_length_counts`
(Prometheus: service/metrics.py).
"""
