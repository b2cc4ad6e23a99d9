"""Running ``python -m sample_app.server`` in a subprocess for tests, and talking HTTP to it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sample_app.load import call
from sample_app.server import launch


def http(base: str, method: str, path: str, body: Any = None, *, token: str | None = None,
         timeout: float = 20) -> tuple[int, dict]:
    """One JSON request; (status, JSON answer), error statuses included."""
    return call(base, method, path, body, token=token, timeout=timeout)


def raw_http(base: str, method: str, path: str, body: bytes = b"",
             headers: dict[str, str | None] | None = None, *,
             timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """One request as a hostile client sends it: these headers and body bytes, untouched.

    Only Host is added, and Content-Length for a body unless ``headers`` name
    it or Transfer-Encoding; a header given as None is left out (Content-Length
    too). Returns (status, headers with lower-case names, body).
    """
    given = dict(headers or {})
    if body and not {"content-length", "transfer-encoding"} & {name.lower() for name in given}:
        given["Content-Length"] = str(len(body))
    address = urlsplit(base)
    conn = HTTPConnection(address.hostname, address.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in given.items():
            if value is not None:
                conn.putheader(name, value)
        conn.endheaders(body or None)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class Served:
    """A release served over HTTP by a real server, from a private copy of its data."""

    release: int
    base: str
    credentials: dict
    admin_token: str


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
