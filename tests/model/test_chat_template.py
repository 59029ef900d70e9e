"""Chat templates rendered like Hugging Face transformers does."""

from __future__ import annotations

import pytest

from pagedserve.model.chat_template import TemplateError, render_chat_template


def test_smollm2_system_and_user(smollm2_tokenizer):
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    expected = (
        "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert smollm2_tokenizer.apply_chat_template(messages) == expected
    assert smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=False) == expected[
        : -len("<|im_start|>assistant\n")
    ]


def test_smollm2_default_system_prompt(smollm2_tokenizer):
    out = smollm2_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_rendered_prompt_tokenizes_with_specials(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi"}]))
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2


@pytest.mark.parametrize(
    "messages",
    [
        "hello",
        None,
        [{"role": "user"}],
        [{"content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": None, "content": "x"}],
        ["user: hi"],
    ],
)
def test_malformed_messages_raise_value_error(smollm2_tokenizer, messages):
    with pytest.raises(ValueError):
        smollm2_tokenizer.apply_chat_template(messages)


def test_missing_template():
    with pytest.raises(ValueError, match="no chat template"):
        render_chat_template(None, [{"role": "user", "content": "x"}])


def test_trim_and_lstrip_blocks_and_variables():
    template = (
        "{{ bos_token }}\n"
        "{% for m in messages %}\n"
        "    {% if m.role == 'user' %}\n"
        "[U]{{ m.content }}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}[A]{% endif %}"
    )
    out = render_chat_template(
        template, [{"role": "user", "content": "hi"}, {"role": "x", "content": "y"}], bos_token="<s>"
    )
    assert out == "<s>\n[U]hi\n[A]"


def test_raise_exception_and_sandbox():
    with pytest.raises(TemplateError, match="only user"):
        render_chat_template(
            "{{ raise_exception('only user') }}", [{"role": "user", "content": "x"}]
        )
    with pytest.raises(ValueError):  # sandbox refuses attribute tricks
        render_chat_template(
            "{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
            [{"role": "user", "content": "x"}],
        )


def test_tojson_keeps_unicode():
    out = render_chat_template("{{ messages[0].content | tojson }}", [{"role": "user", "content": "é"}])
    assert out == '"é"'
