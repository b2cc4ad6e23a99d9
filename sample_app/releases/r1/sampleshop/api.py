"""The HTTP API of release 1, as a pure function of the database root.

``dispatch`` never commits or aborts: the server runs each call in a transaction
of its own. The functions that change data (``create_account``, ``add_product``,
``place_order``, ``open_session``) are also how data is created outside HTTP.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from . import RELEASE
from .models import Account, Order, Product, Session

Response = tuple[int, dict[str, Any]]

SESSION_SECONDS = 3600
MAX_LINES = 50
MAX_QTY = 1000
_USERNAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
# Random order ids (as zope.intid draws them) so that concurrent orders do not all
# compete for the last key of the orders BTree.
_order_ids = random.Random()


class ApiError(Exception):
    """A request the API refuses, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def dispatch(root: Any, method: str, path: str, body: Any) -> Response:
    """Answer one request: ``(status, JSON-ready dict)``."""
    try:
        return _route(root, method, [part for part in path.split("/") if part], body)
    except ApiError as err:
        return err.status, {"error": err.message, "status": err.status}


def _route(root: Any, method: str, parts: list[str], body: Any) -> Response:
    match method, parts:
        case "GET", ["health"]:
            return 200, {"release": RELEASE, "status": "ok"}
        case "POST", ["accounts"]:
            username, password = _credentials(body)
            create_account(root, username, password)
            return 201, {"username": username}
        case "POST", ["login"]:
            account = authenticate(root, *_credentials(body))
            return 200, {"token": open_session(root, account)}
        case "POST", ["orders"]:
            account = authenticate(root, *_credentials(body))
            order = place_order(root, account, _items(body))
            return 201, {"order": order.id, "total": _amount(order.total), "currency": "EUR"}
        case "GET", ["accounts", username]:
            return 200, account_json(_find(root["accounts"], username, "account"))
        case "GET", ["orders", number] if _is_order_number(number):
            return 200, order_json(_find(root["orders"], int(number), "order"))
        case "GET", ["products", sku]:
            return 200, product_json(_find(root["products"], sku, "product"))
    raise ApiError(404, f"no such resource: {method} /{'/'.join(parts)}")


# -- changing data ------------------------------------------------------------------

def create_account(root: Any, username: str, password: str) -> Account:
    """A new account; 409 when the name is taken."""
    if not _USERNAME.match(username):
        raise ApiError(400, "username: 1 to 64 letters, digits, '.', '_' or '-'")
    accounts = root["accounts"]
    if username in accounts:
        raise ApiError(409, f"username {username!r} is taken")
    account = accounts[username] = Account(username, password)
    return account


def authenticate(root: Any, username: str, password: str) -> Account:
    """The account these credentials log in to; 401 otherwise."""
    account = root["accounts"].get(username)
    if account is None or not account.check_password(password):
        raise ApiError(401, "bad username or password")
    return account


def open_session(root: Any, account: Account) -> str:
    """Store a session for ``account`` and return its token."""
    token = secrets.token_urlsafe(24)
    root["sessions"][token] = Session(account, token, time.time() + SESSION_SECONDS)
    return token


def add_product(root: Any, sku: str, title: str, price: str) -> Product:
    """A product priced at ``price`` euros (a decimal string such as ``"12.50"``)."""
    product = root["products"][sku] = Product(sku, title, float(price))
    return product


def place_order(root: Any, account: Account, items: list[tuple[str, int]],
                ids: random.Random | None = None) -> Order:
    """An order of ``items`` (sku, quantity); 400 for an unknown sku."""
    products = root["products"]
    lines = []
    for sku, qty in items:
        product = products.get(sku)
        if product is None:
            raise ApiError(400, f"unknown product {sku!r}")
        lines.append((product, qty))
    orders = root["orders"]
    ids = ids or _order_ids
    number = ids.randrange(1, 2**31)
    while number in orders:
        number = ids.randrange(1, 2**31)
    order = orders[number] = Order(number, account, lines)
    return order


# -- reading requests and writing responses ----------------------------------------------

def _credentials(body: Any) -> tuple[str, str]:
    return _text(body, "username"), _text(body, "password")


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{key}: a non-empty string is required")
    return value


def _is_order_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def _items(body: Any) -> list[tuple[str, int]]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_LINES:
        raise ApiError(400, f"items: a list of 1 to {MAX_LINES} {{sku, qty}} is required")
    parsed = []
    for item in items:
        qty = item.get("qty") if isinstance(item, dict) else None
        if type(qty) is not int or not 1 <= qty <= MAX_QTY:
            raise ApiError(400, f"items: qty must be an integer from 1 to {MAX_QTY}")
        parsed.append((_text(item, "sku"), qty))
    return parsed


def _find(container: Any, key: Any, what: str) -> Any:
    found = container.get(key)
    if found is None:
        raise ApiError(404, f"no {what} {key!r}")
    return found


def _amount(value: float) -> str:
    return f"{value:.2f}"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def account_json(account: Account) -> dict[str, Any]:
    return {"username": account.name, "created": _iso(account.created)}


def product_json(product: Product) -> dict[str, Any]:
    return {"sku": product.sku, "title": product.title, "price": _amount(product.price),
            "currency": "EUR"}


def order_json(order: Order) -> dict[str, Any]:
    return {
        "order": order.id,
        "username": order.account.name,
        "items": [{"sku": product.sku, "qty": qty} for product, qty in order.lines],
        "total": _amount(order.total),
        "currency": "EUR",
        "placed": _iso(order.placed),
    }
