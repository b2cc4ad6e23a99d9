"""The sample application: releases, migrations run on the data each release created, server.

Data of release N is created by release N's own code in a subprocess
(``python -m sample_app.populate``); the upgrade then runs with only the newest
code active, as a deployment of that code would.
"""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import ZODB
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConflictError

import dsustore
from dsustore.storage.connections import reading
from conftest import ADMIN_TOKEN, SAMPLE_SEED, SAMPLE_SIZES, code_restored, copy_release
from sample_app import releases
from sample_app.database import open_database
from sample_app.populate import Sizes, password_for, populate
from sample_app.populate import main as populate_main
from sample_app.live import LiveUpdates
from sample_app.server import MAX_BODY, MAX_DEPTH, RETRIES, SampleApp
from sampleserver import http, raw_http, running_server

LATEST = releases.LATEST
MIGRATIONS = releases.MIGRATIONS
SESSION = "sampleshop.models.Session"


def fields(obj: Any) -> dict[str, Any]:
    obj._p_activate()
    return vars(obj)


# -- releases ------------------------------------------------------------------------

def test_activate_replaces_the_running_release_with_another(restore_code):
    """Only the activated release's directory stays on sys.path and its modules are fresh."""
    first = releases.activate(1)
    assert first.RELEASE == 1 and releases.active_release() == 1
    latest = releases.activate(LATEST)
    assert latest.RELEASE == LATEST and releases.active_release() == LATEST
    assert sys.modules["sampleshop.api"] is latest.api
    assert latest.models.Account is not first.models.Account
    assert Path(latest.api.__file__).is_relative_to(releases.release_dir(LATEST))
    on_path = [entry for entry in sys.path if Path(entry).parent == releases.RELEASES]
    assert on_path == [str(releases.release_dir(LATEST))]


def test_release_numbers_outside_the_history_are_refused():
    for wrong in (0, LATEST + 1, "1", True, 1.0):
        with pytest.raises(ValueError):
            releases.release_dir(wrong)


# -- populate ------------------------------------------------------------------------

def test_populate_creates_what_each_release_stored(release_data):
    """Every release stores its accounts, products and orders; sessions only until release 7."""
    for n, path in release_data.items():
        objects = json.loads(path.with_name(f"r{n}.credentials.json").read_text())["objects"]
        assert objects["sampleshop.models.Account"] == SAMPLE_SIZES["accounts"]
        assert objects["sampleshop.models.Product"] == SAMPLE_SIZES["products"]
        assert objects["sampleshop.models.Order"] == SAMPLE_SIZES["orders"]
        assert objects.get(SESSION, 0) == (SAMPLE_SIZES["sessions"] if n < 7 else 0)


def test_populate_writes_the_credentials_file_for_its_owner_alone(release_data, tmp_path,
                                                                 restore_code):
    """It lists plain passwords: mode 0600 from its creation, even over a world-readable file."""
    for n, path in release_data.items():
        assert stat.S_IMODE(path.with_name(f"r{n}.credentials.json").stat().st_mode) == 0o600
    target = tmp_path / "credentials.json"
    target.write_text("{}")
    target.chmod(0o644)
    db = tmp_path / "small.fs"
    assert populate_main(["--db", str(db), "--release", "1", "--accounts", "2", "--products", "1",
                          "--orders", "1", "--sessions", "1", "--credentials", str(target)]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(json.loads(target.read_text())["accounts"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if "credentials" in p.name) == [target.name]


def test_populate_makes_the_same_data_for_the_same_seed(restore_code):
    """Usernames, passwords, order ids and totals depend on the seed alone."""
    def run(seed: int) -> dict:
        db = ZODB.DB(MappingStorage())
        try:
            return populate(db, 2, Sizes(accounts=5, products=3, orders=8, sessions=2), seed=seed)
        finally:
            db.close()

    first = run(3)
    assert run(3) == first
    assert run(4)["orders"] != first["orders"]
    assert len(first["orders"]) == 8
    assert first["accounts"][0]["password"] == password_for("user00000", 3)


# -- every release's data upgraded to head -------------------------------------------

@dataclass
class Upgraded:
    release: int
    shop: ModuleType
    db: Any
    credentials: dict
    result: dsustore.UpgradeResult


@pytest.fixture(scope="module", params=range(1, LATEST + 1), ids=lambda n: f"r{n}")
def upgraded(request, release_data, tmp_path_factory) -> Iterator[Upgraded]:
    """Release N's data, upgraded to head by dsustore with the latest code active."""
    with code_restored():
        shop = releases.activate(LATEST)
        path, credentials = copy_release(release_data, request.param, tmp_path_factory.mktemp("up"))
        db = open_database(str(path))
        try:
            result = dsustore.upgrade(db, MIGRATIONS)
            yield Upgraded(request.param, shop, db, credentials, result)
        finally:
            db.close()


def test_upgrade_applies_the_migrations_of_the_later_releases(upgraded):
    later = range(upgraded.release + 1, LATEST + 1)
    assert upgraded.result.revisions == [releases.revision(n) for n in later]
    assert dsustore.current(upgraded.db) == (releases.revision(LATEST),)


def test_every_account_logs_in_with_its_original_password(upgraded):
    dispatch = upgraded.shop.api.dispatch
    with reading(upgraded.db) as root:
        usernames = list(root["accounts"].keys())
        assert len(usernames) == SAMPLE_SIZES["accounts"]
        for username in usernames:
            login = {"username": username, "password": password_for(username, SAMPLE_SEED)}
            status, body = dispatch(root, "POST", "/login", login)
            assert status == 200 and body["token"], (username, body)
        wrong = {"username": usernames[0], "password": "wrong"}
        assert dispatch(root, "POST", "/login", wrong)[0] == 401


def test_order_totals_are_unchanged(upgraded):
    """The totals the old release reported are reported again, and every total adds up."""
    dispatch = upgraded.shop.api.dispatch
    with reading(upgraded.db) as root:
        for recorded in upgraded.credentials["orders"]:
            status, body = dispatch(root, "GET", f"/orders/{recorded['order']}", None)
            assert status == 200
            assert (body["total"], body["currency"]) == (recorded["total"], "EUR")
        for order in root["orders"].values():
            lines = sum(product.price.amount * qty for product, qty in order.lines)
            assert order.total.amount == lines


def test_data_takes_the_latest_shape(upgraded):
    """Account fields renamed, added and hashed; Money from its module; Record as superclass."""
    shop = upgraded.shop
    with reading(upgraded.db) as root:
        assert set(root) == {"accounts", "products", "orders", "token_secret", "dsustore"}
        for username, account in root["accounts"].items():
            assert set(fields(account)) == {"username", "email", "password_hash", "created"}
            assert account.username == username and account.email == f"{username}@shop.example"
            assert account.password_hash.startswith("pbkdf2_sha256$")
        for record, amount in [(p, p.price) for p in root["products"].values()] + [
                (o, o.total) for o in root["orders"].values()]:
            assert isinstance(record, shop.models.Record) and isinstance(record.created, float)
            assert type(amount) is shop.money.Money and amount.currency == "EUR"
            assert "placed" not in fields(record)


def test_no_record_names_the_money_class_of_its_old_module(upgraded):
    storage = upgraded.db.storage
    for cls in ("sampleshop.models.Product", "sampleshop.models.Order"):
        oids = list(dsustore.mop.instance_oids(storage, cls))
        assert oids
        for oid in oids:
            data, _ = storage.load(oid)
            assert b"sampleshop.models\nMoney\n" not in data
            assert b"sampleshop.money\nMoney\n" in data


def test_money_stored_before_the_move_is_renamed_in_place(upgraded):
    """Releases 4 and 5 stored sampleshop.models.Money: 0006 rewrites every product and order."""
    rewritten = {m.revision: m.report.references_rewritten for m in upgraded.result.migrations}
    moved = SAMPLE_SIZES["products"] + SAMPLE_SIZES["orders"] if upgraded.release in (4, 5) else 0
    assert rewritten.get("0006", 0) == moved


def test_no_session_is_left(upgraded):
    """The sessions go unreferenced in 0007; a pack removes them once the snapshot taken
    before the upgrade (which keeps them restorable) is deleted."""
    removed = sum(m.report.unreferenced_removed.get(SESSION, 0) for m in upgraded.result.migrations)
    assert removed == (SAMPLE_SIZES["sessions"] if upgraded.release < 7 else 0)
    dsustore.pack(upgraded.db)
    if upgraded.release < 7:
        assert SESSION in dsustore.mop.class_counts(upgraded.db.storage)  # the snapshot keeps them
    for kept in dsustore.snapshots(upgraded.db):
        dsustore.delete_snapshot(upgraded.db, kept.name)
    dsustore.pack(upgraded.db)
    assert SESSION not in dsustore.mop.class_counts(upgraded.db.storage)


# -- migrations on their own ---------------------------------------------------------

def test_a_new_database_is_built_by_the_migrations_with_the_latest_code_alone(
        latest_shop, tmp_path):
    db = open_database(str(tmp_path / "new.fs"))
    try:
        result = dsustore.upgrade(db, MIGRATIONS)
        assert result.revisions == [releases.revision(n) for n in range(1, LATEST + 1)]
        with reading(db) as root:
            assert set(root) == {"accounts", "products", "orders", "token_secret", "dsustore"}
            credentials = {"username": "newcomer", "password": "s3cret"}
            assert latest_shop.api.dispatch(root, "POST", "/accounts", credentials)[0] == 201
            assert latest_shop.api.dispatch(root, "POST", "/login", credentials)[0] == 200
    finally:
        db.close()


def test_the_money_migration_downgrades_to_the_same_floats(latest_shop, release_copy):
    path, _ = release_copy(3)
    db = open_database(str(path))
    try:
        with reading(db) as root:
            before = {number: order.total for number, order in root["orders"].items()}
        dsustore.upgrade(db, MIGRATIONS, target="0004")
        dsustore.downgrade(db, MIGRATIONS, target="0003")
        with reading(db) as root:
            after = {number: order.total for number, order in root["orders"].items()}
        assert after == before and all(type(total) is float for total in after.values())
    finally:
        db.close()


def load_migration(revision: str) -> ModuleType:
    """A migration script as a module, to run it in a patch of the test's own."""
    import importlib.util

    path = next(MIGRATIONS.glob(f"{revision}_*.py"))
    spec = importlib.util.spec_from_file_location(f"sample_migration_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_total_that_is_not_whole_cents_fails_the_money_validation_and_nothing_is_written(
        latest_shop, release_copy):
    path, credentials = release_copy(3)
    number = credentials["orders"][0]["order"]
    db = open_database(str(path))
    try:
        with db.transaction() as conn:
            order = conn.root()["orders"][number]
            order.total = 12.345
            oid = dsustore.errors.format_oid(order._p_oid)
        last = db.lastTransaction()
        with pytest.raises(dsustore.ValidationError) as failed:
            with dsustore.Patch(db) as patch:
                load_migration("0004").upgrade(patch)
        failures = [(f.name, f.oids) for f in failed.value.failures]
        assert failures == [("OrderTotalsUnchanged", (oid,))]
        assert db.lastTransaction() == last
        with pytest.raises(dsustore.ValidationError) as failed:
            dsustore.upgrade(db, MIGRATIONS)
        assert failed.value.migration == "0004"
        assert dsustore.current(db) == ("0003",)
        with reading(db) as root:
            assert root["orders"][number].total == 12.345
            assert all(type(p.price) is float for p in root["products"].values())
    finally:
        db.close()


def test_a_hashing_bug_fails_the_login_validation(latest_shop, release_copy, monkeypatch):
    """Hashes that do not match the old passwords are refused: no account is locked out."""
    real = latest_shop.passwords.hash_password
    monkeypatch.setattr(latest_shop.passwords, "hash_password",
                        lambda password: real(password[:-1]))
    path, _ = release_copy(4)
    db = open_database(str(path))
    try:
        with pytest.raises(dsustore.ValidationError) as failed:
            dsustore.upgrade(db, MIGRATIONS)
        [failure] = failed.value.failures
        assert failure.name == "EveryAccountCanLogIn"
        assert len(failure.oids) == SAMPLE_SIZES["accounts"]
        assert dsustore.current(db) == ("0004",)
    finally:
        db.close()


def test_a_session_still_referenced_blocks_removing_the_class(restore_code, release_copy):
    """An account that kept a session (written by release 6) makes 0007 fail, naming the account."""
    path, credentials = release_copy(6)
    releases.activate(6)
    db = open_database(str(path))
    with db.transaction() as conn:
        root = conn.root()
        account = root["accounts"][credentials["accounts"][0]["username"]]
        account.last_session = next(iter(root["sessions"].values()))
        referrer = dsustore.errors.format_oid(account._p_oid)
    db.close()
    releases.activate(LATEST)
    db = open_database(str(path))
    try:
        with pytest.raises(dsustore.ValidationError) as failed:
            dsustore.upgrade(db, MIGRATIONS)
        [failure] = [f for f in failed.value.failures if SESSION in f.message]
        assert failure.oids == (referrer,)
        assert dsustore.current(db) == ("0006",)
    finally:
        db.close()


# -- the WSGI application --------------------------------------------------------------

@pytest.fixture
def memory_db() -> Iterator[ZODB.DB]:
    db = ZODB.DB(MappingStorage())
    yield db
    db.close()


def serve_with(monkeypatch, dispatch) -> None:
    """Make ``dispatch`` the API the application finds for its next requests."""
    monkeypatch.setitem(sys.modules, "sampleshop.api", SimpleNamespace(dispatch=dispatch))


def stored(db: Any, key: str) -> Any:
    with reading(db) as root:
        return root.get(key)


def test_a_conflicting_request_is_run_again_in_a_fresh_transaction(memory_db, monkeypatch):
    attempts = []

    def dispatch(root, method, path, body):
        attempts.append(path)
        root["attempt"] = len(attempts)
        if len(attempts) < 3:
            raise ConflictError("simulated")
        return 201, {"attempts": len(attempts)}

    serve_with(monkeypatch, dispatch)
    app = SampleApp(memory_db)
    scopes = []

    @contextmanager
    def scope():
        scopes.append("enter")
        try:
            yield
        finally:
            scopes.append("exit")

    app.transaction_scope = scope
    assert app.handle("POST", "/orders", {}) == (201, {"attempts": 3})
    assert scopes == ["enter", "exit"] * 3
    assert stored(memory_db, "attempt") == 3


def test_a_request_that_keeps_conflicting_is_answered_503(memory_db, monkeypatch):
    attempts = []

    def dispatch(root, method, path, body):
        attempts.append(path)
        root["attempt"] = len(attempts)
        raise ConflictError("simulated")

    serve_with(monkeypatch, dispatch)
    status, body = SampleApp(memory_db).handle("POST", "/orders", {})
    assert status == 503 and body["status"] == 503
    assert len(attempts) == RETRIES + 1 and stored(memory_db, "attempt") is None


def test_an_error_status_or_exception_aborts_what_the_request_wrote(memory_db, monkeypatch):
    def dispatch(root, method, path, body):
        root[path] = True
        if path == "/boom":
            raise RuntimeError("bug")
        return (400, {"error": "no"}) if path == "/refused" else (200, {})

    serve_with(monkeypatch, dispatch)
    app = SampleApp(memory_db)
    assert app.handle("POST", "/refused", {})[0] == 400
    assert app.handle("POST", "/boom", {})[0] == 500
    assert app.handle("POST", "/accepted", {})[0] == 200
    written = [stored(memory_db, path) for path in ("/refused", "/boom", "/accepted")]
    assert written == [None, None, True]


def test_each_request_runs_the_api_module_active_at_that_time(memory_db, monkeypatch):
    app = SampleApp(memory_db)
    serve_with(monkeypatch, lambda root, method, path, body: (200, {"release": 1}))
    assert app.handle("GET", "/health", None) == (200, {"release": 1})
    serve_with(monkeypatch, lambda root, method, path, body: (200, {"release": 2}))
    assert app.handle("GET", "/health", None) == (200, {"release": 2})


def test_the_wsgi_app_answers_json_and_refuses_a_body_that_is_not_json(memory_db, monkeypatch):
    serve_with(monkeypatch, lambda root, method, path, body: (201, {"echo": body}))
    app = SampleApp(memory_db)

    def call(data: bytes) -> tuple[str, dict, dict]:
        answer = {}
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/accounts",
                   "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data)}
        body = b"".join(app(environ, lambda status, headers: answer.update(status=status,
                                                                          headers=dict(headers))))
        return answer["status"], answer["headers"], json.loads(body)

    status, headers, body = call(b'{"username": "a"}')
    assert status == "201 Created" and headers["Content-Type"] == "application/json"
    assert body == {"echo": {"username": "a"}}
    status, _, body = call(b"not json")
    assert status == "400 Bad Request" and body["status"] == 400


# -- the real server -----------------------------------------------------------------

@pytest.mark.parametrize("release", [1, LATEST], ids=lambda n: f"r{n}")
def test_the_server_answers_every_endpoint_over_http_from_several_threads(release, release_copy):
    path, credentials = release_copy(release)
    skus = credentials["products"][:2]
    known = credentials["accounts"]
    with running_server(path, release) as (base, proc):
        prices = {sku: Decimal(http(base, "GET", f"/products/{sku}")[1]["price"]) for sku in skus}

        def customer(i: int) -> None:
            me = {"username": f"buyer{i}", "password": f"secret-{i}"}
            assert http(base, "POST", "/accounts", me) == (201, {"username": me["username"]})
            status, login = http(base, "POST", "/login", me)
            assert status == 200 and login["token"]
            items = [{"sku": skus[0], "qty": 2}, {"sku": skus[1], "qty": i + 1}]
            status, placed = http(base, "POST", "/orders", {**me, "items": items})
            expected = prices[skus[0]] * 2 + prices[skus[1]] * (i + 1)
            assert status == 201 and placed["currency"] == "EUR"
            assert Decimal(placed["total"]) == expected
            status, order = http(base, "GET", f"/orders/{placed['order']}")
            assert status == 200 and order["username"] == me["username"] and order["items"] == items
            assert http(base, "GET", f"/accounts/{me['username']}")[1]["username"] == me["username"]
            old = known[i]
            assert http(base, "POST", "/orders", {**old, "items": items[:1]})[0] == 201

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(customer, range(6)))

        assert http(base, "GET", "/health") == (200, {"release": release, "status": "ok"})
        status, product = http(base, "GET", f"/products/{skus[0]}")
        assert status == 200 and re.fullmatch(r"\d+\.\d\d", product["price"])
        bad_login = {"username": known[0]["username"], "password": "wrong"}
        assert http(base, "POST", "/login", bad_login)[0] == 401
        one = [{"sku": skus[0], "qty": 1}]
        assert http(base, "POST", "/orders", {**bad_login, "items": one})[0] == 401
        assert http(base, "POST", "/orders", {**known[0], "items": []})[0] == 400
        taken = {"username": "buyer0", "password": "again"}
        assert http(base, "POST", "/accounts", taken)[0] == 409
        assert http(base, "POST", "/accounts", {"username": "no spaces", "password": "x"})[0] == 400
        for missing in ("/accounts/nobody", "/orders/1", "/products/NOPE", "/nowhere"):
            status, body = http(base, "GET", missing)
            assert status == 404 and body["status"] == 404
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_the_server_keeps_its_data_in_zeo_when_given_a_zeo_uri(tmp_path):
    """A zeo:// database starts empty, is migrated to the release, and keeps what requests wrote."""
    from servers import ZEOServer

    me = {"username": "zeo-user", "password": "over-the-wire"}
    with ZEOServer(base_dir=tmp_path) as zeo:
        with running_server(zeo.uri, LATEST) as (base, _):
            assert http(base, "POST", "/accounts", me)[0] == 201
            assert http(base, "POST", "/login", me)[0] == 200
        db = open_database(zeo.uri)
        try:
            assert dsustore.current(db) == (releases.revision(LATEST),)
            with reading(db) as root:
                assert list(root["accounts"].keys()) == [me["username"]]
        finally:
            db.close()


# -- hostile clients: every bad input is answered with a 4xx, never a 500 ------------------

SURROGATE = "\ud800"  # JSON can spell it ("\ud800"), UTF-8 cannot encode it


def nested(depth: int) -> bytes:
    """A JSON body of arrays ``depth`` deep."""
    return b"[" * depth + b"]" * depth


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("release", range(1, LATEST + 1), ids=lambda n: f"r{n}")
def test_a_lone_surrogate_in_any_string_is_refused_400_by_every_release(release, release_copy):
    """Release 1 logged in, and releases 5 on hashed, a password before looking at it: a lone
    surrogate made them 500. Every string of every endpoint is refused 400 instead."""
    path, credentials = release_copy(release)
    known = credentials["accounts"][0]
    sku = credentials["products"][0]
    with running_server(path, release) as (base, _):
        for path_, body in [
            ("/accounts", {"username": "newcomer", "password": SURROGATE}),
            ("/accounts", {"username": SURROGATE, "password": "x"}),
            ("/login", {**known, "password": SURROGATE}),
            ("/login", {"username": f"user{SURROGATE}", "password": known["password"]}),
            ("/orders", {**known, "password": f"pw{SURROGATE}", "items": [{"sku": sku, "qty": 1}]}),
            ("/orders", {**known, "items": [{"sku": SURROGATE, "qty": 1}]}),
            ("/orders", {**known, "items": [{"sku": sku, "qty": 1, SURROGATE: 1}]}),
        ]:
            status, answer = http(base, "POST", path_, body)
            assert (status, answer["status"]) == (400, 400), (path_, body, answer)
            assert "surrogate" in answer["error"]
        assert http(base, "POST", "/login", known)[0] == 200
        assert http(base, "GET", "/accounts/newcomer")[0] == 404


def test_an_old_account_whose_password_holds_a_lone_surrogate_upgrades_live(release_copy,
                                                                           restore_code):
    """Release 1 stored such a password unchecked before the server refused it: the server
    answers that account's logins 401, not 500, and the upgrade hashes the password."""
    path, credentials = release_copy(1)
    shop = releases.activate(1)
    db = open_database(str(path))
    with db.transaction() as conn:
        shop.api.create_account(conn.root(), "legacy", f"pw{SURROGATE}")
    db.close()
    with running_server(path, 1, admin_token="token") as (base, _):
        assert http(base, "POST", "/login", {"username": "legacy", "password": "pw"})[0] == 401
        status, update = http(base, "POST", "/admin/upgrade", {"release": LATEST}, token="token",
                              timeout=300)
        assert status == 200, update
        assert http(base, "POST", "/login", {"username": "legacy", "password": "pw"})[0] == 401
        assert http(base, "POST", "/login", credentials["accounts"][0])[0] == 200
    releases.activate(LATEST)
    db = open_database(str(path))
    try:
        with reading(db) as root:
            assert root["accounts"]["legacy"].check_password(f"pw{SURROGATE}")
    finally:
        db.close()


def test_a_token_signature_that_is_not_ascii_is_invalid_not_an_error(latest_shop):
    tokens = latest_shop.tokens
    secret = b"k" * 32
    forged = base64.urlsafe_b64encode("user00000:9999999999:é".encode()).decode()
    assert tokens.verify(secret, forged) is None
    assert tokens.verify(secret, tokens.issue(secret, "user00000")) == "user00000"


def test_json_nested_200000_deep_is_refused_400(served_release):
    """The parser's RecursionError was a 500; bodies deeper than MAX_DEPTH are refused too."""
    base, token = served_release.base, served_release.admin_token
    for path in ("/accounts", "/login", "/orders", "/admin/upgrade"):
        for body in (nested(200_000), b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                     b'{"items": ' + nested(MAX_DEPTH) + b"}"):
            status, _, answer = raw_http(base, "POST", path, body, bearer(token))
            assert status == 400, (path, body[:40])
            assert json.loads(answer)["error"] == f"the body nests deeper than {MAX_DEPTH} levels"
    within = b'{"items": ' + nested(MAX_DEPTH - 1) + b"}"
    status, _, answer = raw_http(base, "POST", "/orders", within)
    assert status == 400 and json.loads(answer)["error"].startswith("username")  # the API's own
    assert http(base, "GET", "/health")[1]["release"] == served_release.release


def test_a_body_larger_than_the_limit_is_refused_413(served_release):
    """Refused on its Content-Length, before the body is read."""
    headers = {"Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)}
    status, _, _ = raw_http(served_release.base, "POST", "/accounts", b"", headers)
    assert status == 413


def test_the_wsgi_app_refuses_a_body_larger_than_the_limit_413(memory_db, monkeypatch):
    """Behind another server than waitress too, which may not limit bodies itself."""
    serve_with(monkeypatch, lambda root, method, path, body: (200, {}))
    answer = {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/accounts",
               "CONTENT_LENGTH": str(MAX_BODY + 1), "wsgi.input": io.BytesIO(b"{}")}
    body = b"".join(SampleApp(memory_db)(environ, lambda status, headers: answer.update(
        status=status)))
    assert answer["status"] == "413 Request Entity Too Large"
    assert json.loads(body)["status"] == 413


ADMIN_BODIES_REFUSED = [
    (b'{"release": true}', "not a JSON boolean"),
    (b'{"release": false}', "not a JSON boolean"),
    (b'{"release": "8"}', "not a JSON string"),
    (b'{"release": 8.0}', "not a JSON number"),
    (b'{"release": null}', "not a JSON null"),
    (b'{"release": [8]}', "not a JSON array"),
    (b'{"release": 0}', "there is no release 0"),
    (b'{"release": -1}', "there is no release -1"),
    (b'{"release": 9}', "there is no release 9"),
    (b'{"release": 1000000000000000000000000000000}', "there is no release"),
    (b"[8]", "must be a JSON object"),
    (b"8", "must be a JSON object"),
    (b'"8"', "must be a JSON object"),
]


def test_admin_upgrade_refuses_what_is_not_a_release_number_400(release_copy):
    """``{"release": true}`` made the server load a folder ``rTrue`` and answer 500."""
    path, _ = release_copy(1)
    with running_server(path, 1, admin_token=ADMIN_TOKEN) as (base, _):
        for body, error in ADMIN_BODIES_REFUSED:
            status, _, answer = raw_http(base, "POST", "/admin/upgrade", body, bearer(ADMIN_TOKEN))
            assert status == 400, body
            assert error in json.loads(answer)["error"], (body, answer)
        assert http(base, "GET", "/health")[1]["release"] == 1  # nothing was loaded
        status, update = http(base, "POST", "/admin/upgrade", {"release": LATEST},
                              token=ADMIN_TOKEN, timeout=300)
        assert status == 200, update


def test_admin_upgrade_to_an_older_release_than_the_one_served_is_refused_409(release_copy):
    """It loaded release 1's code over release 8's data and answered 200."""
    path, _ = release_copy(LATEST)
    with running_server(path, LATEST, admin_token=ADMIN_TOKEN) as (base, _):
        status, answer = http(base, "POST", "/admin/upgrade", {"release": 1}, token=ADMIN_TOKEN)
        assert status == 409 and "only goes forward" in answer["error"]
        assert http(base, "GET", "/health")[1]["release"] == LATEST
        assert http(base, "POST", "/admin/upgrade", {"release": LATEST}, token=ADMIN_TOKEN)[0] == 200


def test_admin_upgrade_requires_authorization_bearer_and_the_exact_token_401(served_release):
    """A bare token was accepted. Anything but ``Bearer <token>`` is refused 401 with a
    ``WWW-Authenticate: Bearer`` challenge, before the body is even read."""
    base, token = served_release.base, served_release.admin_token
    refused = [{}, {"Authorization": token}, {"Authorization": f"Basic {token}"},
               {"Authorization": f"Token {token}"}, {"Authorization": "Bearer"},
               {"Authorization": "Bearer "}, {"Authorization": f"Bearer  {token}"},
               {"Authorization": f"Bearer {token[:-1]}"},
               {"Authorization": f"Bearer {token}x"}, {"Authorization": f"Bearer{token}"},
               {"Authorization": f"Bearer {token.upper()}"}]
    for headers in refused:
        for body in (b'{"release": 0}', nested(200_000)):
            status, answer_headers, answer = raw_http(base, "POST", "/admin/upgrade", body, headers)
            assert status == 401, headers
            assert answer_headers["www-authenticate"].startswith("Bearer "), headers
            assert json.loads(answer)["status"] == 401
    _, answer_headers, _ = raw_http(base, "POST", "/admin/upgrade", b"{}", bearer("wrong"))
    assert 'error="invalid_token"' in answer_headers["www-authenticate"]
    for scheme in ("Bearer", "bearer"):  # the scheme's name is case-insensitive (RFC 7235)
        headers = {"Authorization": f"{scheme} {token}"}
        assert raw_http(base, "POST", "/admin/upgrade", b'{"release": 0}', headers)[0] == 400
    assert http(base, "GET", "/health")[1]["release"] == served_release.release


def test_a_live_update_asked_for_while_one_runs_is_refused_409(memory_db, restore_code):
    releases.activate(1)
    live = LiveUpdates(memory_db, 1)
    app = SampleApp(memory_db, live=live, admin_token=ADMIN_TOKEN)
    answer = {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/admin/upgrade",
               "HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}", "CONTENT_LENGTH": "0",
               "wsgi.input": io.BytesIO()}
    with live._lock:  # what the running update holds
        body = b"".join(app(environ, lambda status, headers: answer.update(status=status)))
    assert answer["status"] == "409 Conflict"
    assert json.loads(body) == {"error": "a live update is already running", "status": 409,
                                "release": 1}


def hostile_requests(served) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """What a hostile client sends each endpoint: (method, path, body, headers)."""
    known = served.credentials["accounts"][0]
    sku = served.credentials["products"][0]
    as_json = {"Content-Type": "application/json"}

    def order(items: Any) -> bytes:
        return json.dumps({**known, "items": items}).encode()

    bodies = [
        b"", b"null", b"true", b"0", b"-1", b"1e400", b"NaN", b"Infinity", b'"x"', b"[]", b"{}",
        b"9" * 5000, b"not json", b'{"username": "a"', b"\xff\xfe\x00", b"\xef\xbb\xbf{}",
        '{"username": "é"}'.encode("utf-16"), nested(200_000), nested(MAX_DEPTH),
        b'{"username": NaN, "password": -Infinity}',
        json.dumps({"username": ["a"], "password": {"b": 1}}).encode(),
        json.dumps({"username": 1, "password": 2.5}).encode(),
        json.dumps({"username": None, "password": True}).encode(),
        json.dumps({"username": "", "password": ""}).encode(),
        json.dumps({"username": "a" * 100_000, "password": "b" * 100_000}).encode(),
        json.dumps({**known, "password": "p" * (MAX_BODY // 2)}).encode(),
        json.dumps({"username": SURROGATE, "password": SURROGATE}).encode(),
        json.dumps({**known, "password": SURROGATE}).encode(),
        json.dumps({SURROGATE: SURROGATE}).encode(),
        json.dumps({**known, "username": known["username"] + "\x00"}).encode(),
    ]
    bodies += [order(items) for items in [
        None, "x", 1, {}, {"sku": sku, "qty": 1}, [], [[sku, 1]], [None], [sku],
        [{"sku": sku, "qty": qty} for qty in (0, -1, 1001, 10**30, True, 1.5, "1", None, [1])],
        [{"sku": bad, "qty": 1} for bad in ([sku], {"sku": sku}, 1, None, "", SURROGATE)],
        [{"sku": sku, "qty": 1}] * 51, [{"sku": f"NOPE-{i}", "qty": 1} for i in range(50)],
    ]]
    bodies += [b'{"username": "u", "password": "p", "items": [{"sku": "s", "qty": 1e400}]}',
               b'{"username": "u", "password": "p", "items": [{"sku": "s", "qty": NaN}]}']
    requests = [("POST", path, body, as_json)
                for path in ("/accounts", "/login", "/orders") for body in bodies]
    login = json.dumps(known).encode()
    for headers in [{}, {"Content-Type": "text/plain"}, {"Content-Type": "application/xml"},
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "application/json; charset=latin-1"},
                    {"Content-Type": "multipart/form-data; boundary=x"},
                    {"Content-Length": "abc"}, {"Content-Length": "-1"},
                    {"Content-Length": "1" + "0" * 30}, {"Content-Length": str(len(login) - 1)}]:
        requests.append(("POST", "/login", login, {"Content-Length": str(len(login)), **headers}))
    requests.append(("POST", "/login", login, {"Content-Length": None}))  # a body, no length
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(login), login)
    requests.append(("POST", "/login", chunked, {"Transfer-Encoding": "chunked"}))
    requests.append(("POST", "/login", b"zz\r\n", {"Transfer-Encoding": "chunked"}))
    for path in ("/accounts/%ED%A0%80", "/accounts/%FF", "/accounts/%00", "/accounts/" + "a" * 5000,
                 "/products/%ED%A0%80", "/products/..%2F..", "/orders/999999999999999999",
                 "/orders/-1", "/orders/1e9", "/orders/%EF%BC%91", "/orders/" + "9" * 100,
                 "/health?x=%ED%A0%80", "//health", "/health/", "/%2e%2e/health", "/nowhere"):
        requests.append(("GET", path, b"", {}))
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW"):
        for path in ("/accounts", "/health", "/orders/1", "/admin/upgrade"):
            requests.append((method, path, b"", bearer(served.admin_token)))
    # last: some of these upgrade the server (an empty body names the latest release)
    requests += [("POST", "/admin/upgrade", body, {**as_json, **bearer(served.admin_token)})
                 for body in bodies + [body for body, _ in ADMIN_BODIES_REFUSED]]
    return requests


def test_no_hostile_request_is_answered_with_a_server_error(served_release):
    """A table of bad bodies, types, numbers, headers, paths and methods, sent to every
    endpoint of release 1 and of the latest release: each gets a 4xx (or a success)."""
    base = served_release.base
    errors = []
    for method, path, body, headers in hostile_requests(served_release):
        status, answer_headers, answer = raw_http(base, method, path, body, headers)
        if status >= 500:
            errors.append((status, method, path[:40], body[:60], headers, answer[:200]))
        elif answer_headers.get("content-type") == "application/json" and method != "HEAD":
            assert status < 400 or json.loads(answer)["status"] == status
    assert errors == []
    assert http(base, "GET", "/health")[0] == 200
    assert http(base, "POST", "/login", served_release.credentials["accounts"][0])[0] == 200
