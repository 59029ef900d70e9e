"""loadtest waits for a warming-up target up to --ready-timeout, then gives up with a clear error."""

from __future__ import annotations

import pytest

from pagedserve.loadtest.cli import main
from pagedserve.loadtest.readiness import NotReady, wait_until_ready
from tests.service.conftest import ServerThread, test_options


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_polls_until_ready():
    answers = iter(["warming", "warming", ""])
    clock = FakeClock()
    wait_until_ready(lambda: next(answers), 60, "target", clock, clock.sleep)
    assert clock.now == 2.0  # two one-second polls


def test_gives_up_after_the_timeout_with_the_last_reason():
    clock = FakeClock()
    with pytest.raises(NotReady, match=r"target not ready after 3 s: health NOT_SERVING"):
        wait_until_ready(lambda: "health NOT_SERVING", 3, "target", clock, clock.sleep)
    assert clock.now == 3.0


@pytest.mark.parametrize("target", ["grpc", "openai"])
def test_cli_fails_cleanly_against_a_server_that_stays_warm(target, tmp_path, capsys):
    warming = ServerThread(test_options())  # no engine: health NOT_SERVING, /health 503
    try:
        address = warming.address if target == "grpc" else f"http://127.0.0.1:{warming.server.http_port}"
        flag = "--address" if target == "grpc" else "--url"
        code = main(["--target", target, flag, address, "--ready-timeout", "1.5", "--num-requests", "1",
                     "--out-dir", str(tmp_path), "--no-plots", "--no-progress"])
    finally:
        warming.close()
    assert code == 2
    err = capsys.readouterr().err
    assert "not ready after 1.5 s" in err
    assert ("NOT_SERVING" if target == "grpc" else "/health answered 503") in err
