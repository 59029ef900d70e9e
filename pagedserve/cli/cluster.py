"""`pagedserve cluster`: N replicas of `pagedserve serve` behind the SMG gateway, on loopback.

    pagedserve cluster --replicas 2 --threads 1 --policy cache_aware -- --model smollm2-135m

Flags after `--` go to every replica's `serve` unchanged (model, KV cache, batching); the cluster
sets each replica's ports and --threads itself. Returns once SIGTERM/SIGINT has stopped everything.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time


def add_cluster_parser(sub) -> None:
    from pagedserve.cluster.cluster_options import ClusterOptions

    p = sub.add_parser("cluster", help="N serve replicas behind the SMG gateway on loopback (flags after -- go to serve)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ClusterOptions.add_cli_args(p)
    p.add_argument("--log-dir", default=None, help="where replica-I.log and smg.log go (default: a new temp folder)")
    p.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- then `pagedserve serve` flags for every replica")
    p.set_defaults(func=cmd_cluster)


def cmd_cluster(ns: argparse.Namespace) -> int:
    from pagedserve.cluster.cluster import Cluster, ClusterError
    from pagedserve.cluster.cluster_options import ClusterOptions

    serve_args = list(ns.serve_args)
    if serve_args[:1] == ["--"]:
        serve_args = serve_args[1:]
    options = ClusterOptions.from_cli_args(ns)
    log_dir = ns.log_dir or tempfile.mkdtemp(prefix="pagedserve-cluster-")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # set before starting: a signal while warming stops too
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(options, serve_args, log_dir, log_level=str(ns.log_level).upper())
    try:
        try:
            cluster.start(abort=stop)
        except ClusterError as e:
            if stop.is_set():  # stopped while starting: what the signal asked for
                return 0
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"gateway {options.gateway_url}/v1 ({options.policy}) over "
              f"{', '.join(options.replica_urls)}; replica metrics at <replica>/metrics; logs in {log_dir}",
              flush=True)
        restarted_at: dict[int, float] = {}
        while not stop.wait(1.0):
            if not cluster.gateway.running():
                print(f"error: smg exited with code {cluster.gateway.exit_code()}; see {cluster.gateway.log_path}",
                      file=sys.stderr)
                return 1
            for i, process in enumerate(cluster.replicas):
                # A crashed replica is restarted (at most every 10 s); the gateway takes it back once healthy.
                if not process.running() and time.monotonic() - restarted_at.get(i, -1e9) > 10.0:
                    print(f"warning: replica {i} exited with code {process.exit_code()} (see {process.log_path}); "
                          f"restarting it", file=sys.stderr)
                    restarted_at[i] = time.monotonic()
                    cluster.start_replica(i)
        return 0
    finally:
        cluster.stop()
