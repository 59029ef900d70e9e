"""Rendering a model's chat template (GGUF `tokenizer.chat_template`, a Jinja2 template).

Templates are written for Hugging Face transformers, so we render them the way it does: a
sandboxed, immutable Jinja2 environment with `trim_blocks` and `lstrip_blocks`, a
`raise_exception(msg)` function, a `tojson` filter that keeps non-ASCII text, and the variables
`messages`, `add_generation_prompt`, `bos_token` and `eos_token`. The sandbox matters because
the template comes from the model file, which we do not trust to run arbitrary code.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """A chat template that cannot be rendered, or one that rejected the messages."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template rejected the conversation: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template has a syntax error: {e}") from None


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Return `messages` if it is a list of {"role": str, "content": str, ...} dicts, else raise
    ValueError saying which message is wrong and how."""
    if not isinstance(messages, list):
        raise ValueError(f"messages must be a list of {{role, content}} dicts, got {type(messages).__name__}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {type(msg).__name__}")
        for key in ("role", "content"):
            if key not in msg:
                raise ValueError(f"message {i} has no {key!r}")
            if not isinstance(msg[key], str):
                raise ValueError(f"message {i}: {key!r} must be a string, got {type(msg[key]).__name__}")
    return messages


def render_chat_template(
    template: str | None,
    messages: Any,
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """`template` rendered for `messages`. Raises ValueError (TemplateError for template
    problems) for malformed messages, a missing template, or a template that fails."""
    if not template:
        raise ValueError("this model has no chat template (tokenizer.chat_template is missing)")
    validate_messages(messages)
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except TemplateError:
        raise
    except jinja2.TemplateError as e:
        raise TemplateError(f"chat template failed to render: {e}") from None
