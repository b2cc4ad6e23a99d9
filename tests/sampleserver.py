"""Running ``python -m sample_app.server`` in a subprocess for tests, and talking HTTP to it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sample_app.load import call
from sample_app.server import launch


def http(base: str, method: str, path: str, body: Any = None, *, token: str | None = None,
         timeout: float = 20) -> tuple[int, dict]:
    """One JSON request; (status, JSON answer), error statuses included."""
    return call(base, method, path, body, token=token, timeout=timeout)


@contextmanager
def running_server(db: Path | str, release: int, *,
                   admin_token: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m sample_app.server`` on a free port; yields its base URL, stops it on leaving."""
    proc, base = launch(str(db), release, admin_token=admin_token, capture_errors=True)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()
