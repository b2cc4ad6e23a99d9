"""Creating a database as a deployment of an old release would have: with that release's code.

``python -m sample_app.populate --db PATH --release N`` first applies the migrations
up to release N, as that deployment did, then creates accounts, products, orders
and sessions through release N's own API functions, committing in batches. The
content is the same for the same seed: usernames, passwords (derived from the
username, see :func:`password_for`), products and orders. Timestamps, salts and
session tokens come from the release's code, as in a real deployment.

It writes a JSON file of known credentials, skus and order totals for load
generators and tests, readable by its owner alone (it holds plain passwords),
and prints how many objects each class has.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import transaction

import dsustore
from sample_app import releases
from sample_app.database import open_database

#: how many accounts, skus and orders the credentials file lists
SAMPLE = 50


@dataclass(frozen=True)
class Sizes:
    """How much data to create; the defaults make well over 100,000 persistent objects."""

    accounts: int = 20_000
    products: int = 1_000
    orders: int = 80_000
    sessions: int = 20_000


def username_of(i: int) -> str:
    return f"user{i:05d}"


def sku_of(i: int) -> str:
    return f"SKU-{i:05d}"


def password_for(username: str, seed: int) -> str:
    """The password populate gives ``username``: anyone knowing the seed can log in."""
    return "pw-" + hashlib.sha256(f"{seed}:{username}".encode()).hexdigest()[:12]


class _Batches:
    """Commits every ``size`` objects, then frees the connection's cache."""

    def __init__(self, tm: Any, conn: Any, size: int) -> None:
        self.tm, self.conn, self.size, self.pending = tm, conn, size, 0

    def created(self) -> None:
        self.pending += 1
        if self.pending >= self.size:
            self.commit()

    def commit(self) -> None:
        self.tm.commit()
        self.conn.cacheMinimize()
        self.pending = 0


def populate(db: Any, release: int, sizes: Sizes = Sizes(), *, seed: int = 1,
             batch: int = 10_000) -> dict[str, Any]:
    """Fill an empty database as release ``release`` would; returns the credentials record.

    The caller's process must be able to switch code: this activates the release.
    """
    shop = releases.activate(release)
    dsustore.upgrade(db, releases.MIGRATIONS, target=releases.revision(release))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        root = conn.root()
        if root["accounts"]:
            raise SystemExit("populate: the database already has accounts")
        orders = _create(shop.api, root, sizes, seed, _Batches(tm, conn, batch))
    finally:
        tm.abort()
        conn.close()
    usernames = [username_of(i) for i in range(min(SAMPLE, sizes.accounts))]
    return {
        "release": release,
        "seed": seed,
        "sizes": asdict(sizes),
        "password_rule": "sample_app.populate.password_for(username, seed)",
        "accounts": [{"username": name, "password": password_for(name, seed)}
                     for name in usernames],
        "products": [sku_of(i) for i in range(min(SAMPLE, sizes.products))],
        "orders": orders,
    }


def _create(api: Any, root: Any, sizes: Sizes, seed: int,
            batches: _Batches) -> list[dict[str, Any]]:
    """Create the data through ``api``; returns the first orders with their totals."""
    rng = random.Random(seed)
    accounts = []
    for i in range(sizes.accounts):
        username = username_of(i)
        accounts.append(api.create_account(root, username, password_for(username, seed)))
        batches.created()
    for i in range(sizes.products):
        cents = rng.randint(50, 20_000)
        api.add_product(root, sku_of(i), f"Product {i}", f"{cents // 100}.{cents % 100:02d}")
        batches.created()
    orders = []
    for _ in range(sizes.orders):
        chosen = rng.sample(range(sizes.products), rng.randint(1, min(3, sizes.products)))
        lines = [(sku_of(p), rng.randint(1, 5)) for p in chosen]
        order = api.place_order(root, rng.choice(accounts), lines, ids=rng)
        if len(orders) < SAMPLE:
            orders.append({"order": order.id, "total": api.order_json(order)["total"]})
        batches.created()
    for _ in range(sizes.sessions):
        api.open_session(root, rng.choice(accounts))
        batches.created()
    batches.commit()
    return orders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_app.populate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="FileStorage path or database URI")
    parser.add_argument("--release", type=int, default=1,
                        help="the release whose code creates the data")
    parser.add_argument("--accounts", type=int, default=Sizes.accounts)
    parser.add_argument("--products", type=int, default=Sizes.products)
    parser.add_argument("--orders", type=int, default=Sizes.orders)
    parser.add_argument("--sessions", type=int, default=Sizes.sessions)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10_000, help="objects per transaction")
    parser.add_argument("--credentials", help="where to write the JSON of known credentials "
                        "(default: next to a FileStorage, as NAME.credentials.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.release <= releases.LATEST:
        parser.error(f"--release must be 1 to {releases.LATEST}")
    sizes = Sizes(args.accounts, args.products, args.orders, args.sessions)
    if min(asdict(sizes).values()) < 0 or args.batch < 1:
        parser.error("sizes must be >= 0 and --batch >= 1")
    orphans = args.orders and not (args.accounts and args.products)
    if orphans or (args.sessions and not args.accounts):
        parser.error("orders need accounts and products, sessions need accounts")
    credentials = Path(args.credentials or _default_credentials(args.db))
    started = time.monotonic()
    db = open_database(args.db)
    try:
        record = populate(db, args.release, sizes, seed=args.seed, batch=args.batch)
        counts = dsustore.mop.class_counts(db.storage)
    finally:
        db.close()
    record["objects"] = dict(sorted(counts.items()))
    write_private(credentials, json.dumps(record, indent=2) + "\n")
    width = max(len(name) for name in counts)
    for name, count in sorted(counts.items()):
        print(f"{name:<{width}}  {count:>8}")
    print(f"{'total':<{width}}  {sum(counts.values()):>8}")
    print(f"release {args.release} data created in {time.monotonic() - started:.1f}s; "
          f"credentials in {credentials}")
    return 0


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` for its owner alone (mode 0600): it holds plain passwords.

    The file is created 0600 by ``os.open`` under a fresh temporary name, then
    renamed over ``path``: no one else can read it at any moment, even where a
    world-readable file of that name was, or is still held open by a reader.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _default_credentials(db: str) -> str:
    if "://" in db:
        return "credentials.json"
    path = Path(db)
    return str(path.with_name(path.stem + ".credentials.json"))


if __name__ == "__main__":
    sys.exit(main())
