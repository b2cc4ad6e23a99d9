"""End to end: a running sample_app server upgraded live over HTTP, under load."""

from __future__ import annotations

import time

from ZODB import DB
from ZODB.FileStorage import FileStorage

import dsustore
from sample_app import releases
from sample_app.load import Load
from sampleserver import http, running_server

TOKEN = "test-admin-token"


def _shape(path, shop) -> dict:
    """What the stored data looks like, read with the code of ``shop``."""
    db = DB(FileStorage(str(path), read_only=True))
    try:
        with db.transaction() as conn:
            root = conn.root()
            account = next(iter(root["accounts"].values()))
            account._p_activate()
            order = next(iter(root["orders"].values()))
            order._p_activate()
            return {"current": dsustore.current(db), "root": set(root.keys()),
                    "account": set(vars(account)) - {"_p_estimated_size"},
                    "account_class": type(account), "total": type(order.total)}
    finally:
        db.close()


def test_live_upgrade_under_load_fails_no_request_and_keeps_every_login(release_copy, restore_code):
    """Threads send logins and orders before, during and after the upgrade: all succeed, every
    account made before the upgrade logs in after it, and the data has the newest shape."""
    path, credentials = release_copy(1)
    with running_server(path, 1, admin_token=TOKEN) as (base, _):
        made = [{"username": f"early{i}", "password": f"secret-{i}"} for i in range(5)]
        for account in made:
            assert http(base, "POST", "/accounts", account)[0] == 201
        load = Load(base, credentials, workers=4).start()
        time.sleep(1.0)
        started = time.time()  # the load's clock
        status, update = http(base, "POST", "/admin/upgrade", {"release": releases.LATEST},
                              token=TOKEN, timeout=300)
        ended = time.time()
        time.sleep(1.0)
        requests = load.stop()
        assert status == 200, update
        assert update["revisions"] == [releases.revision(n) for n in range(2, releases.LATEST + 1)]
        failed = [r for r in requests if not r.ok]
        assert failed == []
        assert any(r.ended <= started for r in requests) and any(r.started >= ended for r in requests)
        assert any(r.started > started and r.ended < ended for r in requests)  # served during
        assert http(base, "GET", "/health")[1]["release"] == releases.LATEST
        for account in made + credentials["accounts"][:10]:
            assert http(base, "POST", "/login", account)[0] == 200, account
        assert http(base, "POST", "/admin/upgrade", {"release": 8})[0] == 401  # no token
    shop = releases.activate(releases.LATEST)
    shape = _shape(path, shop)
    assert shape["current"] == (releases.revision(releases.LATEST),)
    assert "sessions" not in shape["root"]
    assert {"username", "email", "password_hash"} <= shape["account"]
    assert not {"name", "password"} & shape["account"]
    assert shape["account_class"] is shop.models.Account
    assert shape["total"] is shop.money.Money


def test_a_failing_live_migration_keeps_the_service_on_the_old_code_and_data(
        release_copy, restore_code):
    """A validation failing in the middle of the upgrade: the server answers the error, goes on
    serving release 1, and the data is as before."""
    path, credentials = release_copy(1)
    shop = releases.activate(1)
    db = DB(FileStorage(str(path)))
    with db.transaction() as conn:  # a total that is not whole cents fails 0004's validation
        order = next(iter(conn.root()["orders"].values()))
        order.total = order.total + 0.004
    db.close()
    before = _shape(path, shop)
    with running_server(path, 1, admin_token=TOKEN) as (base, _):
        status, answer = http(base, "POST", "/admin/upgrade", {"release": releases.LATEST},
                              token=TOKEN, timeout=300)
        assert status == 500
        assert answer["migration"] == "0004" and answer["release"] == 1
        assert "ValidationError" in answer["error"] or answer["failures"]
        assert http(base, "GET", "/health")[1]["release"] == 1
        known = credentials["accounts"][0]
        status, placed = http(base, "POST", "/orders", {**known, "items": [
            {"sku": credentials["products"][0], "qty": 1}]})
        assert status == 201, placed
        assert http(base, "POST", "/login", known)[0] == 200
    after = _shape(path, shop)
    assert after["current"] == before["current"] == (releases.revision(1),)
    assert after["account"] == before["account"] and after["account_class"] is shop.models.Account


def test_a_second_server_on_the_old_code_refuses_to_write_after_the_upgrade(tmp_path, restore_code):
    """Two release-1 servers share a ZEO database; one upgrades live; the other's writes get the
    StaleCode refusal until it runs the new code."""
    from servers import ZEOServer

    from sample_app.populate import Sizes, populate

    with ZEOServer(base_dir=tmp_path) as zeo:
        db = dsustore.open_db(zeo.uri)
        try:
            populate(db, 1, Sizes(accounts=20, products=5, orders=20, sessions=5))
        finally:
            db.close()
        with running_server(zeo.uri, 1, admin_token=TOKEN) as (first, _):
            with running_server(zeo.uri, 1) as (second, _):
                assert http(second, "POST", "/accounts", {"username": "b1", "password": "x"})[0] == 201
                status, update = http(first, "POST", "/admin/upgrade", {"release": releases.LATEST},
                                      token=TOKEN, timeout=300)
                assert status == 200, update
                status, refused = http(second, "POST", "/accounts", {"username": "b2", "password": "x"})
                assert status == 409 and refused["error"].startswith("StaleCode")
                assert refused["migration"] == "0002"
                assert http(second, "GET", "/health")[0] == 200  # reads are not refused
                assert http(first, "POST", "/accounts", {"username": "a1", "password": "x"})[0] == 201
            with running_server(zeo.uri, releases.LATEST) as (renewed, _):
                assert http(renewed, "POST", "/accounts", {"username": "b2", "password": "x"})[0] == 201
                assert http(renewed, "POST", "/login", {"username": "b1", "password": "x"})[0] == 200
        db = dsustore.open_db(zeo.uri)
        try:
            with db.transaction() as conn:
                assert "b2" in conn.root()["accounts"] and "a1" in conn.root()["accounts"]
        finally:
            db.close()
