"""A signal while ``stepline`` is still importing (its first few hundred milliseconds) ends it
with status 128+N: not killed by the signal, no ``KeyboardInterrupt`` traceback.

The moment is found, not guessed: with ``-X importtime`` the interpreter writes a line on stderr
as each module finishes importing, and the signal is sent as soon as trio's line appears, while
the server's own modules are still to be imported (about 100 ms of work).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ..driver import ENV

pytestmark = pytest.mark.e2e

COMMANDS = {"serve": ["serve"], "run": ["run", "--", "true", ":::", "a"]}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_signal_during_the_imports_exits_128_plus_n(command: str, signum: int) -> None:
    with subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "stepline", *COMMANDS[command]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if line.rsplit("|", 1)[-1].strip() == "trio":
                    proc.send_signal(signum)
                    break
            else:
                pytest.fail("trio was never imported")
            rest = proc.stderr.read()
            status = proc.wait(timeout=60)
        finally:
            proc.kill()
    assert status == 128 + signum, rest[-2000:]
    assert "Traceback" not in rest
    assert "stepline.server._serve" not in rest  # it stopped there: the imports did not go on
