"""EngineArgs is the one source of the engine's defaults: every field is a flag of every engine
subcommand, no flags means exactly the dataclass defaults, each flag round-trips, and what is
made from the args (EngineConfig, KVCacheSpec) says the same. Also ServerOptions and BenchOptions."""

import argparse
import dataclasses

import pytest

from pagedserve.bench.bench import BenchOptions
from pagedserve.cache.cache_sizing import parse_memory
from pagedserve.cache.kv_cache_spec import KVCacheSpec
from pagedserve.cli.main import build_parser
from pagedserve.dataclass_flags import flag_of
from pagedserve.engine.engine_args import EngineArgs
from pagedserve.scheduler.engine_config import EngineConfig
from pagedserve.service.server_options import ServerOptions

ENGINE_SUBCOMMANDS = ("serve", "bench", "generate", "perplexity")
REQUIRED_ARGS = {"perplexity": ["--file", "x.txt"]}  # what a subcommand needs besides engine flags

# A valid value other than the default for every field, and how it is spelled on the command line.
NON_DEFAULT = {
    "model": ("gemma3-270m", "gemma3-270m"),
    "kv_dtype": ("int8", "int8"),
    "kv_cache_memory": ("1GiB", "1GiB"),
    "num_kv_blocks": (300, "300"),
    "block_size": (32, "32"),
    "sliding_window": (128, "128"),
    "enable_prefix_caching": (False, None),  # a bool: --no-enable-prefix-caching
    "max_num_batched_tokens": (1024, "1024"),
    "max_step_ms": (120.5, "120.5"),
    "max_num_seqs": (8, "8"),
    "max_waiting": (3, "3"),
    "long_prefill_token_threshold": (64, "64"),
    "max_model_len": (2048, "2048"),
    "threads": (2, "2"),
    "scheduling_policy": ("priority", "priority"),
    "seed": (7, "7"),
    "activation_bits": (8, "8"),
    "speculative": ("ngram", "ngram"),
    "num_draft_tokens": (6, "6"),
    "speculative_max_batch_tokens": (8, "8"),
    "prompt_lookup_min": (1, "1"),
    "prompt_lookup_max": (5, "5"),
}


def subparser(command: str) -> argparse.ArgumentParser:
    [subparsers] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices[command]


def parse(command: str, *flags: str) -> argparse.Namespace:
    return build_parser().parse_args([command, *REQUIRED_ARGS.get(command, []), *flags])


@pytest.mark.parametrize("command", ENGINE_SUBCOMMANDS)
def test_every_engine_field_has_its_flag(command):
    option_strings = {s for a in subparser(command)._actions for s in a.option_strings}
    dests = {a.dest for a in subparser(command)._actions}
    for f in dataclasses.fields(EngineArgs):
        assert flag_of(f) in option_strings and f.name in dests, (command, f.name)


def test_non_default_values_cover_every_field():
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(EngineArgs)}
    for name, (value, _) in NON_DEFAULT.items():
        assert getattr(EngineArgs(), name) != value, name


@pytest.mark.parametrize("command", ENGINE_SUBCOMMANDS)
def test_no_flags_give_exactly_the_dataclass_defaults(command):
    assert EngineArgs.from_cli_args(parse(command)) == EngineArgs()


@pytest.mark.parametrize("command", ENGINE_SUBCOMMANDS)
@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_each_flag_round_trips(command, name):
    value, text = NON_DEFAULT[name]
    flag = flag_of(next(f for f in dataclasses.fields(EngineArgs) if f.name == name))
    argv = [f"--no-{flag[2:]}"] if text is None else [flag, text]
    assert EngineArgs.from_cli_args(parse(command, *argv)) == dataclasses.replace(EngineArgs(), **{name: value})


def test_prefix_caching_spellings():
    on = EngineArgs.from_cli_args(parse("serve", "--no-prefix-cache", "--enable-prefix-caching"))
    assert on.enable_prefix_caching is True
    for flag in ("--no-prefix-cache", "--no-enable-prefix-caching"):
        assert EngineArgs.from_cli_args(parse("bench", flag)).enable_prefix_caching is False


def test_generate_seed_is_the_request_seed_and_engine_seed_the_engine_one():
    ns = parse("generate", "--seed", "5", "--engine-seed", "9")
    assert ns.request_seed == 5 and EngineArgs.from_cli_args(ns).seed == 9


def test_bad_values_are_refused_naming_the_option():
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        parse("serve", "--kv-dtype", "bf16")
    with pytest.raises(ValueError, match="memory size"):
        EngineArgs.from_cli_args(parse("serve", "--kv-cache-memory", "lots"))
    with pytest.raises(ValueError, match="threads"):
        EngineArgs(threads=0)
    with pytest.raises(SystemExit):
        parse("serve", "--speculative", "eagle")
    with pytest.raises(ValueError, match="num_draft_tokens"):
        EngineArgs(num_draft_tokens=0)
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        EngineArgs(prompt_lookup_min=5, prompt_lookup_max=4)


def test_config_and_spec_from_default_args_agree_with_the_args():
    args = EngineArgs()
    spec = args.create_kv_cache_spec([0] * 30, num_kv_heads=3, head_dim=64)
    config = args.create_engine_config(spec, context_length=8192, stop_ids=[2])
    shared = {f.name for f in dataclasses.fields(EngineConfig)} & {f.name for f in dataclasses.fields(EngineArgs)}
    assert shared == {"max_num_batched_tokens", "max_num_seqs", "max_waiting", "long_prefill_token_threshold",
                      "enable_prefix_caching", "scheduling_policy", "max_model_len",
                      "speculative_max_batch_tokens", "max_step_ms"}
    for name in shared - {"max_model_len"}:
        assert getattr(config, name) == getattr(args, name), name
    assert config.max_model_len == 8192 and config.stop_ids == frozenset({2})  # unset: the model's context
    assert config.num_speculative_tokens == 0  # speculation is off by default
    on = dataclasses.replace(args, speculative="ngram", num_draft_tokens=3)
    assert on.create_engine_config(spec, context_length=8192, stop_ids=[2]).num_speculative_tokens == 3
    assert (spec.block_size, spec.kv_dtype) == (args.block_size, args.kv_dtype)
    budget = parse_memory(args.kv_cache_memory)
    assert spec.total_bytes <= budget < spec.total_bytes + sum(spec.bytes_per_block)  # as many blocks as fit


def test_config_and_spec_carry_no_defaults_of_their_own():
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(EngineConfig))
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(KVCacheSpec))


def test_max_model_len_is_capped_by_the_model_context():
    args = EngineArgs(max_model_len=100_000, num_kv_blocks=4, kv_cache_memory=None)
    spec = args.create_kv_cache_spec([0], num_kv_heads=1, head_dim=4)
    assert spec.num_blocks == 4
    assert args.create_engine_config(spec, context_length=2048, stop_ids=()).max_model_len == 2048


def test_server_flags_round_trip_and_metrics_port_zero_is_off():
    ns = parse("serve")
    assert ServerOptions.from_cli_args(ns) == ServerOptions()
    option_strings = {s for a in subparser("serve")._actions for s in a.option_strings}
    assert {flag_of(f) for f in dataclasses.fields(ServerOptions)} <= option_strings
    ns = parse("serve", "--host", "0.0.0.0", "--port", "0", "--metrics-port", "0", "--grace-seconds", "1.5",
               "--max-tokens-limit", "64", "--tls-cert", "c.pem", "--tls-key", "k.pem")
    assert ServerOptions.from_cli_args(ns) == ServerOptions(host="0.0.0.0", port=0, metrics_port=None,
                                                            grace_seconds=1.5, max_tokens_limit=64,
                                                            tls_cert="c.pem", tls_key="k.pem")
    assert ServerOptions.from_cli_args(parse("serve", "--metrics-port", "9100")).metrics_port == 9100


def test_bench_options_from_flags():
    from pagedserve.dataclass_flags import dataclass_from_cli_args

    assert dataclass_from_cli_args(BenchOptions, parse("bench")) == BenchOptions()
    ns = parse("bench", "--batch-sizes", "", "--prefill-tokens", "0", "--compare-llamacpp", "/x/llama-bench")
    assert dataclass_from_cli_args(BenchOptions, ns) == BenchOptions(batch_sizes=(), prefill_tokens=0,
                                                                     compare_llamacpp="/x/llama-bench")
    assert dataclass_from_cli_args(BenchOptions, parse("bench", "--batch-sizes", "1,32")).batch_sizes == (1, 32)
