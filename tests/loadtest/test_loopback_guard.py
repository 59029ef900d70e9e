"""Only loopback targets unless --allow-remote: a refused run never opens a connection."""

from __future__ import annotations

import pytest

from pagedserve.loadtest.cli import RemoteRefused, check_loopback, host_of, main


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.6.7", "::1", "localhost"])
def test_loopback_hosts_pass(host):
    check_loopback(host, allow_remote=False)


@pytest.mark.parametrize("host", ["10.1.2.3", "8.8.8.8", "2001:db8::1", "0.0.0.0"])
def test_other_hosts_are_refused_unless_allowed(host):
    with pytest.raises(RemoteRefused, match="--allow-remote"):
        check_loopback(host, allow_remote=False)
    check_loopback(host, allow_remote=True)


def test_host_of_addresses_and_urls():
    assert host_of("grpc", "127.0.0.1:50051") == "127.0.0.1"
    assert host_of("grpc", "[::1]:50051") == "::1"
    assert host_of("openai", "http://10.0.0.1:8080/base") == "10.0.0.1"
    assert host_of("openai", "localhost:8080") == "localhost"


def test_cli_refuses_remote_targets_and_metrics(capsys):
    assert main(["--address", "10.1.2.3:50051"]) == 2
    assert "refusing to load-test target '10.1.2.3'" in capsys.readouterr().err
    assert main(["--target", "openai", "--url", "http://192.0.2.7:8080"]) == 2
    assert main(["--address", "127.0.0.1:1", "--metrics-url", "http://192.0.2.7:9000/metrics"]) == 2
    assert "metrics URL" in capsys.readouterr().err


def test_pagedserve_loadtest_forwards_to_the_loadtest_cli(capsys):
    from pagedserve.cli.main import main as pagedserve_main

    assert pagedserve_main(["loadtest", "--address", "10.1.2.3:50051"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
