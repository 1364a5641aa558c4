"""A task function that kills the consumer process running it, on every attempt: the poison task
the broker must give up on after ``max_attempts`` instead of looping forever."""

from __future__ import annotations

import os
import signal

MODULE = "tests.support.poison"


def kill_my_consumer() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
