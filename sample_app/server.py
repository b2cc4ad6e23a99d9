"""The sample application over HTTP: a WSGI app with one connection and transaction per request.

Like ``pyramid_tm``, each request opens a connection with a transaction manager
of its own, runs the API, commits (or aborts, for an error status), and is run
again from scratch when the transaction hits a transient error such as a
ConflictError. The API is looked up in ``sys.modules`` on every request, so code
loaded by :func:`sample_app.releases.activate` serves the next request.

``python -m sample_app.server --db PATH_OR_URI --release N`` serves it with
waitress and prints ``serving on http://HOST:PORT`` once listening. With
``--admin-token`` (or ``SAMPLE_APP_ADMIN_TOKEN``), ``POST /admin/upgrade``
``{"release": N}`` with ``Authorization: Bearer TOKEN`` live-updates the running
server (see :mod:`sample_app.live`).

Every bad request is answered with a 4xx, never a 500: :func:`read_body` refuses
what no release's API could take, whatever the release, before any of its code runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import hmac
import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import transaction
from transaction.interfaces import TransientError

import dsustore
from sample_app import releases
from sample_app.database import open_database
from sample_app.live import LiveUpdates, UpdateRunningError

log = logging.getLogger("sample_app.server")

API_MODULE = "sampleshop.api"
#: how many times a request is run again after a transient error (pyramid_tm's default is 3)
RETRIES = 3
#: the largest request body read, in bytes (waitress refuses a larger one itself, 413)
MAX_BODY = 1 << 20
#: how deep a request body's arrays and objects may nest (the API's deepest is 3: orders' items)
MAX_DEPTH = 32
ADMIN_PATH = "/admin/upgrade"
#: waitress worker threads: requests in flight at once, each with its own connection
THREADS = 8

Response = tuple[int, dict[str, Any]]


class HTTPError(Exception):
    """A request refused before it reaches the API: its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)

    def payload(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


class BadRequest(HTTPError):
    """A request body the API cannot take: not JSON, not an object, or not text."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def current_api() -> ModuleType:
    """The API module of the code the process runs now."""
    module = sys.modules.get(API_MODULE)
    return module if module is not None else importlib.import_module(API_MODULE)


class SampleApp:
    """The WSGI application over ``db``.

    ``transaction_scope`` is a zero-argument callable returning a context manager
    entered around each attempt's whole transaction, from opening the connection
    to closing it: a live update replaces it with a gate that holds requests.
    """

    def __init__(self, db: Any, *, retries: int = RETRIES, live: LiveUpdates | None = None,
                 admin_token: str | None = None) -> None:
        self.db = db
        self.retries = retries
        self.live = live
        self.admin_token = admin_token
        self.transaction_scope: Callable[[], AbstractContextManager[Any]] = (
            live.gate.transaction if live is not None else contextlib.nullcontext)

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        headers: list[tuple[str, str]] = []
        try:
            if path == ADMIN_PATH:
                status, payload = self.admin_upgrade(method, environ)
            else:
                status, payload = self.handle(method, path, read_body(environ))
        except HTTPError as err:
            status, payload, headers = err.status, err.payload(), err.headers
        except Exception:  # a bug: still answered in JSON, and logged
            log.exception("%s %s failed", method, path)
            status, payload = 500, {"error": "internal error", "status": 500}
        data = json.dumps(payload).encode()
        start_response(f"{status} {HTTPStatus(status).phrase}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers])
        return [data]

    def handle(self, method: str, path: str, body: Any) -> Response:
        """Run one request, again after each transient error, up to ``retries`` times."""
        for attempt in range(self.retries + 1):
            try:
                with self.transaction_scope():
                    return self.attempt(method, path, body)
            except TransientError as err:
                log.info("%s %s: %s (attempt %d)", method, path, type(err).__name__, attempt + 1)
            except dsustore.StaleCodeError as err:
                log.warning("%s %s refused: %s", method, path, err)
                return 409, {**err.facts(), "error": f"StaleCode: {err}", "status": 409}
            except Exception:
                log.exception("%s %s failed", method, path)
                return 500, {"error": "internal error", "status": 500}
        return 503, {"error": "too many conflicting requests; try again", "status": 503}

    def attempt(self, method: str, path: str, body: Any) -> Response:
        """One transaction: commit for a success status, abort otherwise."""
        tm = transaction.TransactionManager(explicit=True)
        tm.begin()
        conn = self.db.open(transaction_manager=tm)
        try:
            status, payload = current_api().dispatch(conn.root(), method, path, body)
            if status < 400:
                tm.commit()
            else:
                tm.abort()
            return status, payload
        except BaseException:
            tm.abort()
            raise
        finally:
            conn.close()

    def admin_upgrade(self, method: str, environ: dict[str, Any]) -> Response:
        """Live-update the running server to the body's ``release`` (the latest when it names none).

        The token is checked before the body is read: a caller without it learns
        nothing from how its body would be refused.
        """
        if self.live is None or not self.admin_token:
            return 403, {"error": "live updates are not enabled on this server", "status": 403}
        self.authorize(environ)
        if method != "POST":
            raise HTTPError(405, "POST a JSON body {\"release\": N}", [("Allow", "POST")])
        release = requested_release(read_body(environ), self.live.release)
        try:
            return 200, self.live.upgrade(release)
        except UpdateRunningError as err:
            return 409, {"error": str(err), "status": 409, "release": self.live.release}
        except dsustore.DSUError as err:
            log.error("live update to release %d failed, still serving release %d: %s",
                      release, self.live.release, err)
            return 500, {**err.facts(), "error": str(err), "status": 500,
                         "release": self.live.release}

    def authorize(self, environ: dict[str, Any]) -> None:
        """Refuse (401) a request without ``Authorization: Bearer <the admin token>``.

        A bare token or another scheme is refused; the scheme's name is matched
        without regard to case, as RFC 7235 has it. The token is compared in
        constant time, so the time taken tells nothing about how much of it is right.
        """
        expected = (self.admin_token or "").encode()
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        bearer = scheme.lower() == "bearer"
        matches = hmac.compare_digest(token.encode(), expected)
        if not (bearer and matches and expected):
            challenge = 'Bearer realm="admin"' + (', error="invalid_token"' if bearer else "")
            raise HTTPError(401, "Authorization: Bearer <admin token> is required",
                            [("WWW-Authenticate", challenge)])


def requested_release(body: dict[str, Any] | None, serving: int) -> int:
    """The release an admin request's body names, the latest when it names none.

    Refused with 400 unless it is a release number (an int: JSON ``true`` is
    Python's ``True`` and an int too, but no release), and with 409 when it is
    older than the one ``serving``: a live update only goes forward.
    """
    release = (body or {}).get("release", releases.LATEST)
    if type(release) is not int:
        raise BadRequest(f"release: a number from 1 to {releases.LATEST} is required, "
                         f"not a JSON {_json_type(release)}")
    if not 1 <= release <= releases.LATEST:
        raise BadRequest(f"release: there is no release {release}; "
                         f"the releases are 1 to {releases.LATEST}")
    if release < serving:
        raise HTTPError(409, f"release {release} is older than release {serving}, which this "
                             "server runs: a live update only goes forward")
    return release


def read_body(environ: dict[str, Any]) -> dict[str, Any] | None:
    """The request's JSON object, None when it has none.

    What no release's API could take is refused here, for every release alike:
    a body over :data:`MAX_BODY` (413); one that is not JSON (``NaN`` and
    ``Infinity`` are not) or not an object; one nesting deeper than
    :data:`MAX_DEPTH` (200,000 levels would exhaust the parser's recursion);
    and one holding a string UTF-8 cannot encode, such as a lone surrogate
    ``"\\ud800"``, which JSON can spell but the releases' password checks and
    hashes cannot encode (400).
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("bad Content-Length") from None
    if length <= 0:
        return None
    if length > MAX_BODY:
        raise HTTPError(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(environ["wsgi.input"].read(length), parse_constant=_not_json)
    except RecursionError:
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        raise BadRequest(f"the body is not JSON: {err.msg} at character {err.pos}") from None
    except ValueError:  # not UTF-8, NaN, or an integer of more than 4300 digits
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not a JSON {_json_type(body)}")
    _check_nesting_and_text(body)
    return body


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _check_nesting_and_text(body: dict[str, Any]) -> None:
    """Refuse a body nesting deeper than :data:`MAX_DEPTH` or holding a string that is not text.

    Walked with a list, not recursion, so a body only just within the parser's
    recursion limit cannot exhaust this check's.
    """
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                value = list(value.values())
            pending.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRequest(f"strings must be Unicode text: {text[err.start]!r} (a lone surrogate) "
                         "cannot be encoded as UTF-8") from None


def _json_type(value: Any) -> str:
    """What ``value`` was called in the JSON it was parsed from."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def prepare_database(db: Any, release: int) -> None:
    """Bring the database to the revision ``release`` needs; refuse one that is ahead of it."""
    ahead = [rev for rev in dsustore.current(db) if rev > releases.revision(release)]
    if ahead:
        raise SystemExit(f"the database is at {', '.join(ahead)}, ahead of release {release}")
    dsustore.upgrade(db, releases.MIGRATIONS, target=releases.revision(release))


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # busy threads are expected
    releases.activate(args.release)
    db = open_database(args.db)
    db.setPoolSize(THREADS + 4)  # a connection per worker thread, and the update's own
    try:
        prepare_database(db, args.release)
        live = LiveUpdates(db, args.release)
        serve(SampleApp(db, live=live, admin_token=args.admin_token), args.host, args.port)
    finally:
        db.close()
    return 0


def serve(app: SampleApp, host: str, port: int) -> None:
    """Serve ``app`` with waitress until SIGTERM or Ctrl-C, announcing the address first."""
    import waitress

    # waitress refuses (413) a larger body itself, before reading it
    server = waitress.create_server(app, host=host, port=port, threads=THREADS,
                                    max_request_body_size=MAX_BODY + 1)
    signal.signal(signal.SIGTERM, _exit)
    print(f"serving on http://{server.effective_host}:{server.effective_port}", flush=True)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()


def launch(db: str, release: int, *, admin_token: str | None = None, capture_errors: bool = False,
           timeout: float = 60) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m sample_app.server`` in a subprocess: (the process, its base URL).

    Returns once the server listens (it prints its address), so callers can send
    requests at once; a server that does not start in ``timeout`` seconds is killed.
    """
    env = {key: value for key, value in os.environ.items() if key != "SAMPLE_APP_ADMIN_TOKEN"}
    if admin_token:
        env["SAMPLE_APP_ADMIN_TOKEN"] = admin_token
    process = subprocess.Popen(
        [sys.executable, "-m", "sample_app.server", "--db", db, "--release", str(release),
         "--port", "0"], cwd=Path(__file__).resolve().parent.parent, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture_errors else None)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("serving on "):
        process.kill()
        errors = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"the sample_app server did not start: {line!r} {errors}")
    return process, line.split()[-1]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sample_app.server",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True,
                        help="FileStorage path, or a URI such as zeo://host:port")
    parser.add_argument("--release", type=int, default=releases.LATEST, help="the release to run")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--admin-token", default=os.environ.get("SAMPLE_APP_ADMIN_TOKEN"),
                        help="enables POST /admin/upgrade for callers presenting it")
    args = parser.parse_args(argv)
    if not 1 <= args.release <= releases.LATEST:
        parser.error(f"--release must be 1 to {releases.LATEST}")
    return args


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
