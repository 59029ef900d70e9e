"""`pagedserve cluster` without starting anything: options, generated flags, command lines."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

from pagedserve.cli.main import build_parser
from pagedserve.cluster.cluster_options import ClusterOptions
from pagedserve.cluster.gateway import smg_argv
from pagedserve.cluster.replica import check_serve_args, replica_argv


def parse(*argv: str):
    return build_parser().parse_args(["cluster", *argv])


def test_every_field_is_a_flag_with_the_field_default():
    ns = parse()
    assert ClusterOptions.from_cli_args(ns) == ClusterOptions()
    assert ns.serve_args == []


def test_flags_and_serve_args_after_the_separator():
    ns = parse("--replicas", "3", "--threads", "2", "--policy", "round_robin", "--pin-cores",
               "--", "--model", "m.gguf", "--max-num-seqs", "8")
    options = ClusterOptions.from_cli_args(ns)
    assert (options.replicas, options.threads, options.policy, options.pin_cores) == (3, 2, "round_robin", True)
    assert ns.serve_args[-4:] == ["--model", "m.gguf", "--max-num-seqs", "8"]


def test_unknown_policy_is_refused():
    with pytest.raises(SystemExit):
        parse("--policy", "fastest")


@pytest.mark.parametrize("changes, field", [({"replicas": 0}, "replicas"), ({"threads": 0}, "threads"),
                                            ({"port": 8001}, "overlap"), ({"prometheus_port": 8000}, "overlap"),
                                            ({"replica_port": 65535}, "overflow"),
                                            ({"health_failure_threshold": 0}, "health_failure_threshold")])
def test_bad_options_name_the_problem(changes, field):
    with pytest.raises(ValueError, match=field):
        ClusterOptions(**changes)


def test_replica_command_line_is_loopback_with_its_own_port_and_threads():
    options = ClusterOptions(replicas=2, threads=3, replica_port=9100)
    argv = replica_argv(options, 1, ["--model", "m.gguf"])
    assert argv[:3] == [sys.executable, "-m", "pagedserve.cli.main"]
    assert argv[3:6] == ["--log-level", "INFO", "serve"]
    flags = dict(zip(argv[6::2], argv[7::2]))
    assert flags["--host"] == flags["--http-host"] == "127.0.0.1"
    assert flags["--http-port"] == "9101" and flags["--threads"] == "3" and flags["--port"] == "0"
    assert argv[-2:] == ["--model", "m.gguf"]
    # the replica's own serve parser accepts exactly this command line
    ns = build_parser().parse_args(argv[3:])
    assert (ns.http_port, ns.threads, ns.host, ns.model) == (9101, 3, "127.0.0.1", "m.gguf")


@pytest.mark.parametrize("flag", ["--port", "--http-port=9", "--threads", "--host", "--metrics-port"])
def test_serve_flags_the_cluster_sets_are_refused(flag):
    with pytest.raises(ValueError, match=flag.split("=")[0]):
        check_serve_args(["--model", "m", flag, "1"])


def test_smg_command_keeps_gateway_and_prometheus_on_loopback():
    options = ClusterOptions(port=7000, prometheus_port=7001, policy="round_robin")
    argv = smg_argv("/bin/smg", options, ["http://127.0.0.1:1", "http://127.0.0.1:2"])
    assert argv[:2] == ["/bin/smg", "launch"]
    at = argv.index
    assert argv[at("--host") + 1] == argv[at("--prometheus-host") + 1] == "127.0.0.1"
    assert argv[at("--port") + 1] == "7000" and argv[at("--prometheus-port") + 1] == "7001"
    assert argv[at("--worker-urls") + 1: at("--worker-urls") + 3] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert argv[at("--policy") + 1] == "round_robin"


def test_pinned_cores_are_disjoint_per_replica():
    options = dataclasses.replace(ClusterOptions(replicas=2, threads=2), pin_cores=True)
    assert options.cores_of(0) == {0, 1} and options.cores_of(1) == {2, 3}
    assert ClusterOptions().cores_of(1) is None


def test_smg_command_is_what_the_pinned_smg_parses():
    from smg.launch_router import parse_router_args

    options = ClusterOptions(port=7000, prometheus_port=7001, policy="cache_aware", health_check_interval_secs=3,
                             health_failure_threshold=4, health_success_threshold=1, cb_failure_threshold=5,
                             cb_timeout_duration_secs=6)
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    args = parse_router_args(smg_argv("/bin/smg", options, urls)[2:])  # after `smg launch`
    assert (args.host, args.port, args.prometheus_host, args.prometheus_port) == ("127.0.0.1", 7000, "127.0.0.1", 7001)
    assert args.worker_urls == urls and args.policy == "cache_aware"
    assert (args.health_check_interval_secs, args.health_failure_threshold, args.health_success_threshold) == (3, 4, 1)
    assert (args.cb_failure_threshold, args.cb_timeout_duration_secs) == (5, 6)


def test_pinning_more_cores_than_available_is_refused_before_starting(tmp_path):
    from pagedserve.cluster.cluster import Cluster

    too_many = len(os.sched_getaffinity(0)) + 1
    options = ClusterOptions(replicas=1, threads=too_many, pin_cores=True)
    with pytest.raises(ValueError, match="--pin-cores needs cores"):
        Cluster(options, [], str(tmp_path))
