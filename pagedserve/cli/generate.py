"""`pagedserve generate`: run prompts as one batch through the engine and print the results."""

from __future__ import annotations

import argparse
import json

from pagedserve.engine.engine_args import EngineArgs
from pagedserve.sampling_params import SamplingParams


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate continuations of one or more prompts (one batch)")
    EngineArgs.add_cli_args(p)
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    p.add_argument("--prompt-ids", action="append", default=[],
                   help="prompt as a JSON list of token ids, used exactly as given (repeatable)")
    p.add_argument("--chat", action="store_true", help="render each prompt as a user message")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--seed", dest="request_seed", type=int, default=None,
                   help="seed that makes sampling reproducible")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--logprobs", type=int, default=0, help="top-n logprobs of each sampled token")
    p.add_argument("--prompt-logprobs", type=int, default=0,
                   help="top-K logprobs of the distribution predicting each prompt token (--json: "
                        "prompt_logprobs; each prompt token's own logprob: prompt_token_logprobs)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt, one per line")
    p.set_defaults(func=cmd_generate)


def _prompt_ids(ns: argparse.Namespace, tokenizer) -> list[list[int]]:
    prompts = []
    for text in ns.prompt:
        if ns.chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}])
            prompts.append(tokenizer.encode(text, add_special=False))
        else:
            prompts.append(tokenizer.encode(text))
    for raw in ns.prompt_ids:
        ids = json.loads(raw)
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError(f"--prompt-ids must be a JSON list of integers, got {raw!r}")
        prompts.append(ids)
    if not prompts:
        raise ValueError("give at least one --prompt or --prompt-ids")
    return prompts


def cmd_generate(ns: argparse.Namespace) -> int:
    from pagedserve.engine.engine_factory import build_engine

    engine, model = build_engine(EngineArgs.from_cli_args(ns))
    prompts = _prompt_ids(ns, model.tokenizer)
    for ids in prompts:
        bad = [i for i in ids if not 0 <= i < model.config.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{model.config.vocab_size - 1})")
    params = SamplingParams(
        temperature=ns.temperature, top_k=ns.top_k, top_p=ns.top_p, min_p=ns.min_p,
        repetition_penalty=ns.repetition_penalty, presence_penalty=ns.presence_penalty,
        frequency_penalty=ns.frequency_penalty, seed=ns.request_seed, max_tokens=ns.max_tokens,
        stop=tuple(ns.stop), ignore_eos=ns.ignore_eos, logprobs=ns.logprobs,
        prompt_logprobs=ns.prompt_logprobs,
    )
    outputs = engine.generate(prompts, params)
    for ids, out in zip(prompts, outputs):
        if not ns.json:
            print(out.new_text)
            continue
        record = {
            "prompt_ids": ids,
            "token_ids": out.new_token_ids,
            "text": out.new_text,
            "finish_reason": out.finish_reason,
        }
        if ns.logprobs:
            record["logprobs"] = [[[t, lp] for t, lp in tok.top_logprobs[:ns.logprobs]]
                                  for tok in out.new_logprobs]
        if ns.prompt_logprobs:
            entries = out.prompt_logprobs or [None] * len(ids)
            record["prompt_logprobs"] = [
                None if entry is None else [[t, lp] for t, lp in entry.top_logprobs]
                for entry in entries
            ]
            # the logprob of each prompt token itself (in the top-K list or not)
            record["prompt_token_logprobs"] = [None if entry is None else entry.logprob for entry in entries]
        print(json.dumps(record))
    return 0
