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
