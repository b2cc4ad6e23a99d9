"""Running ``python -m sample_app.server`` in a subprocess for tests, and talking HTTP to it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def http(base: str, method: str, path: str, body: Any = None, *, token: str | None = None,
         timeout: float = 20) -> tuple[int, dict]:
    """One JSON request; (status, JSON answer), error statuses included."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


@contextmanager
def running_server(db: Path | str, release: int, *,
                   admin_token: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m sample_app.server`` on a free port; yields its base URL, stops it on leaving."""
    env = dict(os.environ)
    env.pop("SAMPLE_APP_ADMIN_TOKEN", None)
    if admin_token:
        env["SAMPLE_APP_ADMIN_TOKEN"] = admin_token
    proc = subprocess.Popen(
        [sys.executable, "-m", "sample_app.server", "--db", str(db), "--release", str(release),
         "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("serving on http://"):
            proc.kill()
            raise AssertionError(f"the server did not start: {line!r} {proc.stderr.read()}")
        yield line.split()[-1], proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()
