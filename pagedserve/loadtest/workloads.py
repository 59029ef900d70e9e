"""Built-in workloads: seeded, deterministic request specs, and turning them into prompts.

Every request is a pure function of (workload settings, seed, index): its own `random.Random`
seeded by the index means request 17 is the same whatever order or concurrency the runner uses,
so two servers measured with the same flags get byte-identical prompts.

Prompt text is drawn from a fixed list of common English words. Byte-level BPE tokenizers (Llama,
SmolLM2, Qwen) and SentencePiece ones encode almost each of these words, with its leading space,
as one token, so N words are close to N tokens. Where the target can tokenize (the gRPC target
always; llama-server with --prompt-format ids) `prepare` cuts each segment to its exact length.

The `grounded` and `free-chat` workloads instead send the shipped prompt sets (prompt_sets.py):
real texts and code to rewrite, extract, quote or edit, and open questions, in a seeded order;
their input length is that of the prompt, so --input-len does not apply.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Callable, Optional

from pagedserve.loadtest.prompt_sets import PROMPT_SETS, load_prompt_set, seeded_order

WORDS = tuple("""
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there one all we their has been would more will other if about
its only new some could these two may first then do any like my now over such our man me even
most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see
men work long get here between both life being under never day same another know while last
might great old year off come since against go came right used take three water small large
house city open land place point part number word time hand light night river field horse
garden window paper music story table money friend school market summer winter morning letter
""".split())

WORKLOADS = ("synthetic", "shared-prefix", "long-context", "chat", "multi-turn", "jsonl", *PROMPT_SETS)
# (input tokens, output tokens) when --input-len / --output-len are not given (the prompt sets'
# inputs are their own length: 0 here means "not set by flags").
DEFAULT_LENGTHS = {"synthetic": (128, 128), "shared-prefix": (64, 128), "long-context": (2048, 64),
                   "chat": (128, 128), "multi-turn": (32, 64), "jsonl": (0, 128),
                   "grounded": (0, 256), "free-chat": (0, 256)}
LEN_DISTS = ("fixed", "uniform", "normal")


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text and the number of tokens it stands for."""

    text: str
    tokens: int


@dataclass(frozen=True)
class RequestSpec:
    """One request as the workload defines it: prompt segments (plain prompt) or chat messages,
    and max_tokens. `input_tokens` is the intended prompt length (exact once prepared as ids)."""

    index: int
    segments: tuple[Segment, ...] = ()
    messages: Optional[tuple[dict, ...]] = None
    max_tokens: int = 128
    input_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


@dataclass(frozen=True)
class Prepared:
    """What a target sends: exactly one of `prompt_ids`, `text`, `messages`."""

    spec: RequestSpec
    prompt_ids: Optional[list[int]] = None
    text: Optional[str] = None
    messages: Optional[list[dict]] = None

    @property
    def input_tokens(self) -> int:
        return len(self.prompt_ids) if self.prompt_ids is not None else self.spec.input_tokens


def sample_len(rng: random.Random, mean: int, dist: str, spread: float) -> int:
    """A length >= 1 around `mean`: fixed; uniform on [mean(1-spread), mean(1+spread)]; normal
    with standard deviation spread*mean (clipped at 1)."""
    if dist == "fixed" or mean <= 1:
        return max(1, mean)
    if dist == "uniform":
        return max(1, rng.randint(round(mean * (1 - spread)), round(mean * (1 + spread))))
    if dist == "normal":
        return max(1, round(rng.gauss(mean, spread * mean)))
    raise ValueError(f"unknown length distribution {dist!r}; choose from {', '.join(LEN_DISTS)}")


def words(rng: random.Random, n: int, lead_space: bool = False) -> str:
    """n words from the fixed list, space separated (and space led: a segment that follows)."""
    text = " ".join(rng.choice(WORDS) for _ in range(n))
    return " " + text if lead_space else text


@dataclass
class Workload:
    """Request specs by index. Lengths are in tokens; `dataset` is the jsonl path."""

    name: str = "synthetic"
    seed: int = 0
    input_len: Optional[int] = None
    output_len: Optional[int] = None
    len_dist: str = "fixed"
    len_spread: float = 0.25
    prefix_len: int = 256
    chat_turns: int = 3
    dataset: Optional[str] = None
    num_prefixes: int = 5
    num_conversations: int = 20

    def __post_init__(self):
        if self.name not in WORKLOADS:
            raise ValueError(f"unknown workload {self.name!r}; choose from {', '.join(WORKLOADS)}")
        if self.len_dist not in LEN_DISTS:
            raise ValueError(f"unknown --len-dist {self.len_dist!r}; choose from {', '.join(LEN_DISTS)}")
        default_in, default_out = DEFAULT_LENGTHS[self.name]
        self.input_len = default_in if self.input_len is None else self.input_len
        self.output_len = default_out if self.output_len is None else self.output_len
        self._rows: list[dict] = []
        if self.name == "jsonl":
            if not self.dataset:
                raise ValueError("the jsonl workload needs --dataset FILE.jsonl")
            self._rows = load_jsonl(self.dataset)
        if self.name in PROMPT_SETS:
            self._prompts = load_prompt_set(self.name)
            self._order = seeded_order(self.name, self.seed)
        # The shared system prompt: one text for every request of the run.
        self._prefix = words(random.Random(f"{self.seed}/prefix"), self.prefix_len)
        if self.name == "multi-turn":
            if self.num_prefixes < 1 or self.num_conversations < 1:
                raise ValueError("multi-turn needs --num-prefixes >= 1 and --num-conversations >= 1")
            self._prefixes = [words(random.Random(f"{self.seed}/prefix/{k}"), self.prefix_len)
                              for k in range(self.num_prefixes)]

    def request(self, index: int) -> RequestSpec:
        """The index-th request (deterministic)."""
        rng = random.Random(f"{self.seed}/{self.name}/{index}")
        out = sample_len(rng, self.output_len, self.len_dist, self.len_spread)
        n_in = sample_len(rng, self.input_len, self.len_dist, self.len_spread)
        if self.name in ("synthetic", "long-context"):
            return RequestSpec(index, (Segment(words(rng, n_in), n_in),), max_tokens=out, input_tokens=n_in)
        if self.name == "shared-prefix":
            segments = (Segment(self._prefix, self.prefix_len), Segment(words(rng, n_in, True), n_in))
            return RequestSpec(index, segments, max_tokens=out, input_tokens=self.prefix_len + n_in)
        if self.name == "chat":
            return RequestSpec(index, messages=tuple(chat_messages(rng, n_in, self.chat_turns)),
                               max_tokens=out, input_tokens=n_in)
        if self.name in PROMPT_SETS:
            item = self._prompts[self._order[index % len(self._order)]]
            # A rough count (about 4 characters a token) until the server reports the real one;
            # the chat template adds its own tokens.
            return RequestSpec(index, messages=item.messages, max_tokens=out,
                               input_tokens=max(1, len(item.content) // 4))
        if self.name == "multi-turn":
            return self._multi_turn(index)
        row = self._rows[index % len(self._rows)]
        max_tokens = int(row.get("max_tokens") or self.output_len)
        if "messages" in row:
            return RequestSpec(index, messages=tuple(row["messages"]), max_tokens=max_tokens)
        prompt = row["prompt"]
        return RequestSpec(index, (Segment(prompt, 0),), max_tokens=max_tokens,
                           input_tokens=len(prompt.split()))

    def _multi_turn(self, index: int) -> RequestSpec:
        """Turn t of conversation c, in turn-major order: every conversation's turn 0, then every
        turn 1, ... (a fixed set of users taking turns); after `chat_turns` turns new conversations
        start. Neighbours in that order share a system prompt (`prefix_len` words): conversation c
        has prompt (c // 2) mod num_prefixes, so requests go 0, 0, 1, 1, ... and a round-robin
        gateway over two replicas hands each replica the prompts in turn (0, 1, 0, 1, ...): its
        worst case (with many clients arriving at random it switches prompts half as often).
        Each user turn has ~input_len words and each earlier assistant turn, written by the
        workload rather than by the model so prompts stay deterministic, as many. The prompt of
        turn t extends the prompt of turn t-1, so a replica that served t-1 holds all but its end."""
        per_round = self.num_conversations * max(1, self.chat_turns)
        rnd, within = divmod(index, per_round)
        turn, local = divmod(within, self.num_conversations)
        conversation = rnd * self.num_conversations + local
        rng = random.Random(f"{self.seed}/multi-turn/{conversation}")
        messages = [{"role": "system", "content": self._prefixes[(local // 2) % self.num_prefixes]}]
        n_words = self.prefix_len
        for j in range(turn + 1):  # every turn draws the same numbers whatever `turn` is asked
            user = sample_len(rng, self.input_len, self.len_dist, self.len_spread)
            reply = sample_len(rng, self.input_len, self.len_dist, self.len_spread)
            user_text, reply_text = words(rng, user) + "?", words(rng, reply) + "."
            messages.append({"role": "user", "content": user_text})
            n_words += user
            if j < turn:
                messages.append({"role": "assistant", "content": reply_text})
                n_words += reply
        out = sample_len(rng, self.output_len, self.len_dist, self.len_spread)
        return RequestSpec(index, messages=tuple(messages), max_tokens=out, input_tokens=n_words)


def chat_messages(rng: random.Random, n_words: int, turns: int) -> list[dict]:
    """A system turn, then `turns` user turns with assistant replies between, ending on a user
    turn; about n_words words in all (the chat template adds its own tokens)."""
    turns = max(1, turns)
    per_turn = max(1, n_words // (2 * turns))
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for t in range(turns):
        messages.append({"role": "user", "content": words(rng, per_turn) + "?"})
        if t < turns - 1:
            messages.append({"role": "assistant", "content": words(rng, per_turn) + "."})
    return messages


def load_jsonl(path: str) -> list[dict]:
    """Rows of a jsonl dataset; each needs "prompt" (text) or "messages"; "max_tokens" optional."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) and not isinstance(row.get("messages"), list):
                raise ValueError(f"{path}:{number}: needs a string \"prompt\" or a \"messages\" list")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no requests")
    return rows


Tokenize = Callable[[str, bool], list[int]]


def prepare(spec: RequestSpec, tokenize: Optional[Tokenize], cache: Optional[dict] = None) -> Prepared:
    """The request as sent. With `tokenize(text, add_special)`, plain prompts become token ids of
    exactly the asked length: each segment tokenized on its own (special tokens such as BOS only
    for the first) and cut, or padded by repeating its ids, to its token count (0: as is).
    `cache` memoizes tokenizations (the shared prefix is tokenized once)."""
    if spec.messages is not None:
        return Prepared(spec, messages=[dict(m) for m in spec.messages])
    if tokenize is None:
        return Prepared(spec, text=spec.text)
    cache = {} if cache is None else cache
    ids: list[int] = []
    for k, segment in enumerate(spec.segments):
        key = (segment.text, k == 0)
        if key not in cache:
            cache[key] = list(tokenize(segment.text, k == 0))
        seg_ids = cache[key]
        if segment.tokens and seg_ids:
            seg_ids = (seg_ids * (-(-segment.tokens // len(seg_ids))))[: segment.tokens]
        ids.extend(seg_ids)
    return Prepared(spec, prompt_ids=ids)
