"""The package's layers: imports only downwards, and ZODB's internals only in the storage layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import transaction
import ZODB
from ZODB import ConflictResolution, _compat
from ZODB import Connection as connection_module
from ZODB.Connection import TmpStore, TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.fsIndex import fsIndex
from ZODB.serialize import ObjectWriter
from ZEO.TransactionBuffer import TransactionBuffer

from dsustore.storage import (FileStorageAdapter, HistoryFreeRelStorage,
                              HistoryPreservingRelStorage, StorageAdapter, ZEOAdapter, adapter_for)
from dsustore.storage.internals import INTERNALS, missing

PACKAGE = Path(__file__).resolve().parent.parent / "dsustore"
ROOT = PACKAGE.parent

#: ZODB modules whose use means knowing the storage kind or ZODB's internals
STORAGE_ONLY = ("ZODB.FileStorage", "ZODB.MappingStorage", "ZODB.fsIndex", "ZODB._compat",
                "ZODB.mvccadapter", "ZODB.ConflictResolution", "ZODB.Connection", "ZEO",
                "relstorage")


def _modules_above_storage() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py"))
            if path.relative_to(PACKAGE).parts[0] != "storage"]


def test_the_import_contracts_hold():
    """import-linter's contracts in pyproject.toml: layers, no cycles, storage kinds below."""
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_no_module_above_the_storage_layer_touches_a_private_attribute():
    """Outside dsustore/storage, no ``obj._name`` of another object (``_p_`` attributes aside)."""
    found = []
    for path in _modules_above_storage():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("_p_") or (node.attr.startswith("__")
                                               and node.attr.endswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_no_module_above_the_storage_layer_imports_a_storage_or_zodb_internals():
    """Which storage it is, and ZODB's connection and pickle internals, are storage's business."""
    found = []
    for path in _modules_above_storage():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if any(name == bad or name.startswith(bad + ".") for bad in STORAGE_ONLY):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == []


EXPECTED_ADAPTER = {
    "mapping": StorageAdapter,
    "file": FileStorageAdapter,
    "zeo": ZEOAdapter,
    "relstorage-hp": HistoryPreservingRelStorage,
    "relstorage-hf": HistoryFreeRelStorage,
}


def test_each_storage_gets_its_adapter_once(db, storage_kind):
    """The adapter is chosen by the storage's kind, once per database."""
    adapter = adapter_for(db)
    assert type(adapter) is EXPECTED_ADAPTER[storage_kind]
    assert adapter_for(db) is adapter
    assert adapter.keeps_history is (storage_kind != "relstorage-hf")


def _samples(db: ZODB.DB, tmp_path: Path) -> tuple[dict[str, object], Callable[[], object]]:
    """One live object of each kind the internals are found on, and how to close them."""
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    conn = db.open(transaction_manager=tm)
    conn.root()
    fs = FileStorage(str(tmp_path / "samples.fs"))
    committing = FileStorage(str(tmp_path / "committing.fs"))
    committing.tpc_begin(TransactionMetaData())
    samples = {
        "connection": conn,
        "connection_module": connection_module,
        "reader": conn._reader,
        "mvcc_instance": conn._normal_storage,
        "mvcc_adapter": db._mvcc_storage,
        "tmpstore": TmpStore(conn._normal_storage),
        "writer": ObjectWriter(),
        "compat": _compat,
        "conflict_resolution": ConflictResolution,
        "filestorage": fs,
        "committing_filestorage": committing,
        "fsindex": fsIndex(),
    }
    return samples, lambda: (tm.abort(), conn.close(), fs.close(),
                             committing.tpc_abort(committing._transaction), committing.close())


def test_every_zodb_internal_dsustore_relies_on_exists(tmp_path):
    """Each private attribute of ZODB the storage layer uses is there in the installed ZODB."""
    db = ZODB.DB(None)
    samples, close = _samples(db, tmp_path)
    try:
        assert [str(internal) for internal in missing(samples)] == []
        checked = {internal.on for internal in INTERNALS} - {"relstorage"} - set(ZEO_SAMPLES)
        assert checked <= samples.keys()  # every ZODB internal was looked for
    finally:
        close()
        db.close()


@pytest.mark.parametrize("storage_kind", ["relstorage-hp", "relstorage-hf"])
def test_every_relstorage_internal_dsustore_relies_on_exists(db):
    """Each private attribute of RelStorage the storage layer uses is there, on a real server."""
    assert [str(internal) for internal in missing({"relstorage": db.storage})] == []


#: what each ZEO sample is, from a client connected to a real server
ZEO_SAMPLES: dict[str, Callable[[object], object]] = {
    "zeo_client": lambda storage: storage,
    "zeo_runner": lambda storage: storage._server,
    "zeo_io": lambda storage: storage._server.client,
    "zeo_protocol": lambda storage: storage._server.client.protocol,
    "zeo_buffer": lambda storage: TransactionBuffer(0),
}


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_every_zeo_internal_dsustore_relies_on_exists(db):
    """Each private attribute of ZEO's client the storage layer uses is there, on a client
    connected to a real server."""
    samples = {name: sample(db.storage) for name, sample in ZEO_SAMPLES.items()}
    try:
        assert [str(internal) for internal in missing(samples)] == []
        assert {internal.on for internal in INTERNALS if internal.on.startswith("zeo")} \
            <= samples.keys()
    finally:
        samples["zeo_buffer"].close()


def test_a_missing_internal_is_named():
    """The check names what a release dropped, and why dsustore needed it."""
    class Stripped:
        pass

    gone = missing({"fsindex": Stripped()})
    assert [internal.name for internal in gone] == ["_data"]
    assert "look up index buckets" in str(gone[0])
