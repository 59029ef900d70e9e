"""Load a GGUF file into a servable model: config, repacked weights and tokenizer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pagedserve.model.freed_memory import release_freed_memory
from pagedserve.model.config import SUPPORTED_ARCHITECTURES, ModelConfig, config_from_metadata
from pagedserve.model.gguf_file import GGUFFile, ModelLoadError, read_gguf
from pagedserve.model.tokenizer import Tokenizer, load_tokenizer
from pagedserve.model.weights import ModelWeights, dominant_format, load_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    path: str
    config: ModelConfig
    weights: ModelWeights
    tokenizer: Tokenizer


# Metadata the tokenizer has read into its own tables: on a 128k vocabulary, ~20 MB of Python
# strings that would otherwise stay alive (and on top of the weights) until the load ends.
_VOCABULARY_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                    "tokenizer.ggml.scores")


def _drop_vocabulary(gguf: GGUFFile) -> None:
    for key in _VOCABULARY_KEYS:
        gguf.metadata.pop(key, None)
    gguf.release_header()
    release_freed_memory()


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
    _drop_vocabulary(gguf)
    try:
        weights = load_weights(gguf, config)
    except ModelLoadError:
        raise
    except (ValueError, IndexError) as e:
        raise ModelLoadError(f"{path}: tensor data is corrupt ({e})") from None
    del gguf, embd  # unmaps the file: only the repacked weights stay resident
    release_freed_memory()
    log.info("loaded %s (%s, %d layers, %s) in %.1f s", path, arch, config.num_layers,
             config.weight_format, time.perf_counter() - start)
    return LoadedModel(path, config, weights, tokenizer)
