"""Rooflines for `bench`: how close a decode or prefill figure comes to what the machine allows.

- Memory roofline (decode): a step of B sequences reads every weight once and each sequence's KV
  cache; at `bandwidth` bytes/s that allows at most B * bandwidth / (weight_bytes + B * kv_bytes)
  tokens/s. Attention arithmetic and activations are left out (small beside the weights).
- Integer dot-product peak (prefill, large batches): VNNI instructions per cycle x MACs per
  instruction x cores x clock; a token needs one MAC per matrix weight (embedding lookup excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedserve.model.weight_layout import LinearWeight

# MACs of one 512-bit VNNI instruction: vpdpbusd multiplies 64 u8 x s8 pairs, vpdpwssd 32 s16 x s16.
VNNI_MACS_PER_INSTRUCTION = {"vpdpbusd": 64, "vpdpwssd": 32}
# Assumed: one 512-bit VNNI instruction retired per cycle and core (AMD Zen 4 runs it as two
# 256-bit halves on two pipes; Intel cores with one 512-bit FMA port do one too).
VNNI_PER_CYCLE = 1


@dataclass(frozen=True)
class WeightStats:
    """The model's matrices: bytes held in memory and in the file, and their weight count."""

    num_weights: int  # elements of every matrix (token embedding and a separate output included)
    loaded_bytes: int  # LinearWeight.nbytes summed
    file_bytes: int  # the file's tensor bytes of the same matrices
    decode_weight_bytes: int  # read per decode step: every layer matrix + the output matrix
    macs_per_token: int  # one per weight of the matrices a token goes through

    def to_json(self) -> dict:
        return {"num_weights": self.num_weights, "loaded_bytes": self.loaded_bytes, "file_bytes": self.file_bytes,
                "loaded_bytes_per_weight": self.loaded_bytes / self.num_weights,
                "file_bytes_per_weight": self.file_bytes / self.num_weights,
                "decode_weight_bytes": self.decode_weight_bytes, "macs_per_token": self.macs_per_token}


def layer_matrices(weights) -> list[LinearWeight]:
    """Every matrix the layers multiply by, once each (a split projection as its parts)."""
    out: list[LinearWeight] = []
    for layer in weights.layers:
        out.extend(layer.qkv_split or (layer.qkv,))
        out.append(layer.attn_output)
        out.extend(layer.gate_up_split or (layer.gate_up,))
        out.append(layer.ffn_down)
    return out


def weight_stats(weights, file_tensors) -> WeightStats:
    """`weights`: a loaded ModelWeights; `file_tensors`: the GGUF's tensors by name."""
    matrices = layer_matrices(weights)
    tied = weights.output is weights.token_embedding
    everything = matrices + [weights.token_embedding] + ([] if tied else [weights.output])
    file_matrices = [t for t in file_tensors.values() if len(t.shape) == 2]
    per_token = sum(w.num_out * w.num_in for w in matrices) + weights.output.num_out * weights.output.num_in
    return WeightStats(
        num_weights=sum(w.num_out * w.num_in for w in everything),
        loaded_bytes=sum(w.nbytes for w in everything),
        file_bytes=sum(int(t.data.nbytes) for t in file_matrices),
        decode_weight_bytes=sum(w.nbytes for w in matrices) + weights.output.nbytes,
        macs_per_token=per_token,
    )


def decode_roofline_tok_s(bandwidth: float, weight_bytes: int, kv_bytes_per_token: int, batch: int,
                          context_tokens: float) -> float:
    """Most tokens/s a decode step of `batch` sequences of `context_tokens` each can give when
    reading `weight_bytes` once and each sequence's KV (`kv_bytes_per_token` a position) per step."""
    bytes_per_step = weight_bytes + batch * kv_bytes_per_token * context_tokens
    return batch * bandwidth / bytes_per_step


def cpu_clock_mhz(cpuinfo_text: str) -> float | None:
    """The highest "cpu MHz" of /proc/cpuinfo (the clock the kernel last saw; None if absent)."""
    values = [float(line.split(":")[1]) for line in cpuinfo_text.splitlines()
              if line.startswith("cpu MHz") and ":" in line]
    return max(values) if values else None


def vnni_instruction(cpuinfo_text: str) -> str | None:
    """The widest integer dot product the CPU has ("vpdpbusd" needs avx512_vnni), or None."""
    flags = set()
    for line in cpuinfo_text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":")[1].split())
    return "vpdpbusd" if "avx512_vnni" in flags else None


def int_dot_peak_macs(num_cores: int, clock_hz: float, instruction: str,
                      per_cycle: float = VNNI_PER_CYCLE) -> float:
    """Integer MACs per second at the peak: instructions per cycle x MACs each x cores x clock."""
    return per_cycle * VNNI_MACS_PER_INSTRUCTION[instruction] * num_cores * clock_hz


def roofline_report(result: dict, stats: WeightStats, kv_bytes_per_token: int, bandwidth: float,
                    num_cores: int, cpuinfo_text: str, prompt_tokens: int, decode_tokens: int) -> dict:
    """The roofline figures of one bench result (JSON-ready): fractions of the memory roofline per
    decode figure, and of the 8- and 16-bit VNNI peaks for prefill and the largest decode batch."""
    context = prompt_tokens + decode_tokens / 2  # the mean context over a decode run
    decode = {}
    for batch, tok_s in result["decode_tok_s"].items():
        most = decode_roofline_tok_s(bandwidth, stats.decode_weight_bytes, kv_bytes_per_token, int(batch), context)
        decode[batch] = {"max_tok_s": most, "fraction": tok_s / most}
    clock_mhz = cpu_clock_mhz(cpuinfo_text)
    out = {"read_bandwidth_bytes_s": bandwidth, "decode_mean_context_tokens": context, "decode": decode,
           "clock_mhz": clock_mhz, "clock_source": "/proc/cpuinfo cpu MHz", "cores": num_cores,
           "vnni_per_cycle_assumed": VNNI_PER_CYCLE, "int_dot": None}
    if clock_mhz is None or vnni_instruction(cpuinfo_text) is None:
        return out
    peaks = {name: int_dot_peak_macs(num_cores, clock_mhz * 1e6, name) for name in VNNI_MACS_PER_INSTRUCTION}
    achieved = {}
    if result.get("prefill_tok_s"):
        achieved["prefill"] = result["prefill_tok_s"] * stats.macs_per_token
    if result["decode_tok_s"]:
        largest = max(result["decode_tok_s"], key=int)
        achieved[f"decode batch {largest}"] = result["decode_tok_s"][largest] * stats.macs_per_token
    out["int_dot"] = {
        "peak_macs_s": peaks,
        "achieved_macs_s": achieved,
        "fraction": {what: {name: macs / peak for name, peak in peaks.items()} for what, macs in achieved.items()},
    }
    return out
