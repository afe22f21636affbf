"""Stopping a study: SIGTERM (`kill <pid>`, a scheduler's pre-emption) raised as Ctrl-C is, so that
training can say what it kept, and one line for a stop that no handler caught (a script's)."""
from __future__ import annotations

import os
import signal
import sys


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill <pid>`, a scheduler's pre-emption), raised where the process is, as Ctrl-C is."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated`, so that a killed study says what it kept (main thread only),
    and make a Ctrl-C or SIGTERM that no handler caught one line and exit code 2 (a script's)."""
    def handler(signum, frame):
        raise Terminated()

    def one_line(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return sys.__excepthook__(kind, value, tb)
        how = "stopped by SIGTERM" if issubclass(kind, Terminated) else "interrupted"
        print(f"error: {how}; every finished run and the last saved epoch are kept. Rerun the same command to "
              f"continue.", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)

    signal.signal(signal.SIGTERM, handler)
    sys.excepthook = one_line
