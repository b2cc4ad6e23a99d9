"""A load of concurrent login and order requests against a running sample_app server.

Each worker thread logs in as a known account, places an order and reads it back,
again and again, over HTTP on the loopback interface; every request is recorded
with its start and end time (seconds since the epoch, to line up with the phases
the server reports) and status, so the caller can count what was served before,
during and after a live update and how long requests waited.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request as the client saw it."""

    kind: str
    started: float
    ended: float
    status: int
    error: str = ""

    @property
    def duration(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def call(base: str, method: str, path: str, body: Any = None, *, token: str | None = None,
         timeout: float = 120) -> tuple[int, dict[str, Any]]:
    """One HTTP request with a JSON body; returns (status, JSON answer)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@dataclass
class Load:
    """Worker threads sending login and order requests until stopped."""

    base: str
    credentials: dict[str, Any]
    workers: int = 6
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True)
                         for i in range(self.workers)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Request]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.requests

    def _work(self, number: int) -> None:
        rng = random.Random(number)
        accounts = self.credentials["accounts"]
        skus = self.credentials["products"]
        while not self._stop.is_set():
            account = rng.choice(accounts)
            self._timed("login", "POST", "/login", account)
            order = dict(account, items=[{"sku": rng.choice(skus), "qty": rng.randint(1, 3)}])
            placed = self._timed("order", "POST", "/orders", order)
            if placed.get("order") is not None:
                self._timed("read", "GET", f"/orders/{placed['order']}", None)

    def _timed(self, kind: str, method: str, path: str, body: Any) -> dict[str, Any]:
        started = time.time()
        answer: dict[str, Any] = {}
        try:
            status, answer = call(self.base, method, path, body)
            error = "" if 200 <= status < 300 else str(answer.get("error", ""))
        except Exception as err:  # a refused or dropped connection is a failed request too
            status, error = 0, f"{type(err).__name__}: {err}"
        with self._lock:
            self.requests.append(Request(kind, started, time.time(), status, error))
        return answer
