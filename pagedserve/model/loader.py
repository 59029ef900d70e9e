"""Load a GGUF file into a servable model: config, repacked weights and tokenizer."""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass

from pagedserve.model.config import SUPPORTED_ARCHITECTURES, ModelConfig, config_from_metadata
from pagedserve.model.gguf_file import ModelLoadError, read_gguf
from pagedserve.model.layer_stack import stack_layers
from pagedserve.model.tokenizer import Tokenizer, load_tokenizer
from pagedserve.model.weights import ModelWeights, dominant_format, load_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    path: str
    config: ModelConfig
    weights: ModelWeights
    tokenizer: Tokenizer


def _release_freed_memory() -> None:
    """Hand the decoding temporaries back to the OS (glibc keeps freed heap memory otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def load_model(path: str) -> LoadedModel:
    """Read, check and repack a GGUF model. Raises ModelLoadError with a readable reason."""
    start = time.perf_counter()
    gguf = read_gguf(path)
    meta = gguf.metadata
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{path}: unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    tokenizer = load_tokenizer(meta)
    embd = gguf.tensors.get("token_embd.weight")
    if embd is None:
        raise ModelLoadError(f"{path}: missing tensor 'token_embd.weight'")
    if len(embd.shape) != 2 or embd.shape[0] != tokenizer.vocab_size:
        # as llama.cpp: other ids could be sampled but not detokenized, or tokenized but not embedded
        raise ModelLoadError(f"{path}: tensor 'token_embd.weight' has shape {embd.shape}, expected "
                             f"{tokenizer.vocab_size} rows (one per tokenizer token)")
    config = config_from_metadata(meta, dominant_format(gguf), vocab_size=embd.shape[0])
    try:
        weights = stack_layers(load_weights(gguf, config))
    except ModelLoadError:
        raise
    except (ValueError, IndexError) as e:
        raise ModelLoadError(f"{path}: tensor data is corrupt ({e})") from None
    del gguf, embd  # unmaps the file: only the repacked weights stay resident
    _release_freed_memory()
    log.info("loaded %s (%s, %d layers, %s) in %.1f s", path, arch, config.num_layers,
             config.weight_format, time.perf_counter() - start)
    return LoadedModel(path, config, weights, tokenizer)
