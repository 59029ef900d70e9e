"""The prompt sets shipped in pagedserve/loadtest/data/: input-grounded tasks and free-chat questions.

`grounded`: rewrite, extract, quote or edit a text or a piece of code given in the prompt, so that
much of the answer is copied from the input (what prompt-lookup speculative decoding speeds up).
`free-chat`: open questions with nothing to copy. Sources and licences: data/README.md.

Both are chat prompts (one user turn). `seeded_order` gives the order a run takes them in, so
request i of a run is the same prompt for the same seed whatever the tool or the concurrency.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SOURCE_PLACEHOLDER = "{source}"
GROUNDED_KINDS = ("rewrite", "extract", "quote", "edit")


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a set: `content` is the user message; `source` the file it quotes ("" for none)."""

    name: str
    kind: str
    content: str
    source: str = ""

    @property
    def messages(self) -> tuple[dict, ...]:
        return ({"role": "user", "content": self.content},)


@functools.cache
def grounded_prompts() -> tuple[PromptItem, ...]:
    """The grounded tasks of data/grounded/tasks.json, each with its source text filled in."""
    base = DATA_DIR / "grounded"
    tasks = json.loads((base / "tasks.json").read_text(encoding="utf-8"))
    items = []
    for number, task in enumerate(tasks):
        where = f"{base / 'tasks.json'}: task {task.get('id', number)!r}"
        if not all(isinstance(task.get(key), str) for key in ("id", "kind", "source", "prompt")):
            raise ValueError(f"{where}: needs string fields id, kind, source and prompt")
        if task["kind"] not in GROUNDED_KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(GROUNDED_KINDS)}, got {task['kind']!r}")
        if task["prompt"].count(SOURCE_PLACEHOLDER) != 1:
            raise ValueError(f"{where}: the prompt must contain {SOURCE_PLACEHOLDER} exactly once")
        text = (base / task["source"]).read_text(encoding="utf-8").rstrip("\n")
        # replace, not str.format: code samples are full of braces.
        items.append(PromptItem(task["id"], task["kind"], task["prompt"].replace(SOURCE_PLACEHOLDER, text),
                                task["source"]))
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{base / 'tasks.json'}: task ids repeat")
    return tuple(items)


@functools.cache
def free_chat_prompts() -> tuple[PromptItem, ...]:
    """The questions of data/free_chat/questions.txt (one a line; '#' lines are comments)."""
    lines = (DATA_DIR / "free_chat" / "questions.txt").read_text(encoding="utf-8").splitlines()
    questions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return tuple(PromptItem(f"free-chat-{k}", "chat", q) for k, q in enumerate(questions))


PROMPT_SETS = {"grounded": grounded_prompts, "free-chat": free_chat_prompts}


def load_prompt_set(name: str) -> tuple[PromptItem, ...]:
    """The prompt set called `name` (a key of PROMPT_SETS)."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; choose from {', '.join(PROMPT_SETS)}")
    return PROMPT_SETS[name]()


def seeded_order(name: str, seed: int) -> list[int]:
    """A permutation of the indices of set `name`, fixed by `seed`: a run takes prompt
    order[i % len(order)] for its request i, so every prompt is used once before any repeats."""
    order = list(range(len(load_prompt_set(name))))
    random.Random(f"{seed}/{name}/order").shuffle(order)
    return order
