"""The JSON schema suite under tests/data/json_schemas, shared by the structured-output tests."""

from __future__ import annotations

import json
import os

from tests.conftest import data_path

SCHEMA_DIR = data_path("json_schemas")
SCHEMA_NAMES = sorted(f[:-5] for f in os.listdir(SCHEMA_DIR) if f.endswith(".json"))


def load_schema(name: str) -> dict:
    with open(os.path.join(SCHEMA_DIR, name + ".json")) as f:
        return json.load(f)


def assert_sampled_json_validates(engine, tokenizer, names, seeds, prompt_ids) -> None:
    """Generate one document per (schema, seed) at temperature 1 (up to 200 tokens) with the
    prompt `prompt_ids(tokenizer, text)`; each must stop on its own and validate."""
    import jsonschema

    from pagedserve.sampling_params import SamplingParams
    from pagedserve.structured.constraint import Constraint

    prompts, params, expected = [], [], []
    for name in names:
        schema = load_schema(name)
        prompt = prompt_ids(tokenizer, f"Reply with JSON for a {name.replace('_', ' ')}.")
        for seed in seeds:
            prompts.append(prompt)
            params.append(SamplingParams(temperature=1.0, seed=seed, max_tokens=200,
                                         constraint=Constraint("json_schema", json.dumps(schema))))
            expected.append((name, schema))
    for (name, schema), out in zip(expected, engine.generate(prompts, params)):
        text = tokenizer.decode(out.new_token_ids, skip_special=True)
        assert out.finish_reason == "stop", (name, text)
        jsonschema.validate(json.loads(text), schema)
