"""Every private attribute of ZODB, ZEO and RelStorage that dsustore relies on, by name.

Each entry says which object has it and why dsustore needs it. The test suite
builds one live object of each kind (a connection, a FileStorage, a RelStorage on
a real server...) and checks :func:`missing` is empty: a release of those packages
that drops or renames one fails that test, naming it, instead of breaking an update.
Nothing outside :mod:`dsustore.storage` touches any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Internal:
    """One private attribute dsustore uses."""

    #: which sample object has it (a key of the ``samples`` given to :func:`missing`)
    on: str
    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.on}.{self.name} ({self.why})"


INTERNALS: tuple[Internal, ...] = (
    # ZODB.Connection.Connection
    Internal("connection", "_cache", "the object cache: ghosts, invalidation, swaps"),
    Internal("connection", "_resetCache", "an empty cache for a connection of new code"),
    Internal("connection", "_needs_to_join", "join the transaction before a savepoint"),
    Internal("connection", "_registered_objects", "objects policies changed, flushed per batch"),
    Internal("connection", "_added", "whether code in a patch's block added objects"),
    Internal("connection", "_creating", "objects a flush created"),
    Internal("connection", "_commit", "flush changed objects without a savepoint"),
    Internal("connection", "_readCurrent", "objects a commit will lock (lock capacity)"),
    Internal("connection", "_modified", "cached objects a streamed commit updates, or drops on abort"),
    Internal("connection", "_storage", "the savepoint storage; other ways to load"),
    Internal("connection", "_normal_storage", "the connection's MVCC view of the storage"),
    Internal("connection", "_savepoint_storage", "the appending savepoint storage"),
    Internal("connection", "_commit_savepoint", "a commit that streams the savepoint"),
    Internal("connection", "_reader", "decode references; swap classes on load"),
    Internal("reader", "_persistent_load", "references decode into the connection's ghosts"),
    # ZODB.mvccadapter
    Internal("mvcc_instance", "_start", "the transaction a connection's view starts after"),
    Internal("mvcc_instance", "_ltid", "the transaction a connection just committed"),
    Internal("mvcc_instance", "_base", "the other views, told to drop caches after a big commit"),
    Internal("mvcc_instance", "_storage", "store a big commit below the MVCC adapter"),
    Internal("mvcc_instance", "_lock", "read what a view has heard, consistently (ZEO)"),
    Internal("mvcc_instance", "_invalidations", "what a view heard before a recorder was on"),
    Internal("mvcc_instance", "_invalidate", "record the commits a ZEO client hears of"),
    Internal("mvcc_instance", "_invalidateCache", "know when a view lost track (reconnect)"),
    Internal("mvcc_adapter", "_instances", "the views to tell after a big commit"),
    Internal("mvcc_adapter", "_lock", "walk the views safely"),
    # ZODB.Connection.TmpStore, ZODB.serialize.ObjectWriter, ZODB._compat
    Internal("tmpstore", "_file", "append records without a seek per record"),
    Internal("writer", "_file", "pickle class metadata once per class"),
    Internal("writer", "_p", "pickle class metadata once per class"),
    Internal("writer", "_jar", "the connection new objects are added to"),
    Internal("writer", "_dump", "write a record from a state, not an object"),
    Internal("compat", "PersistentUnpickler", "decode records outside a connection's cache"),
    Internal("compat", "Pickler", "pickle plain states without persistent_id"),
    Internal("compat", "Unpickler", "list the classes a record names, building none (renames)"),
    Internal("compat", "_protocol", "the pickle protocol ZODB writes"),
    Internal("conflict_resolution", "find_global", "two code versions in one process"),
    Internal("conflict_resolution", "_class_cache", "forget classes of the replaced code"),
    # ZODB.FileStorage
    Internal("filestorage", "_file_name", "read the data file in place"),
    Internal("filestorage", "_index", "which record of an oid is current"),
    Internal("filestorage", "_lock", "read the committed end consistently"),
    Internal("filestorage", "_pos", "the end of the committed data"),
    Internal("filestorage", "_ltid", "the last committed transaction"),
    Internal("filestorage", "_transaction", "store a committing transaction's records in chunks"),
    Internal("filestorage", "_quota", "store in chunks only where no quota is checked"),
    Internal("filestorage", "_tfile", "the committing transaction's records, written in chunks, "
             "or a staged commit's file standing in for it until the vote"),
    Internal("filestorage", "_tindex", "where each record of the committing transaction lies"),
    Internal("committing_filestorage", "_thl", "the committing transaction's header length"),
    Internal("filestorage", "_tid", "the committing transaction's tid, in each record header"),
    Internal("filestorage", "_oid", "the largest oid, raised for new objects"),
    Internal("fsindex", "_data", "look up index buckets once per run of oids"),
    # ZEO.ClientStorage and its I/O thread (ZEO.asyncio.client)
    Internal("zeo_client", "_call", "server calls a scan, a change list and a streamed commit wait for"),
    Internal("zeo_client", "_server", "the client's I/O thread, where bulk reads are sent"),
    Internal("zeo_client", "_async_iter", "send a batch of a large commit's records at once"),
    Internal("zeo_client", "_check_trans", "the transaction buffer of a streamed commit"),
    Internal("zeo_runner", "loop", "run a batch of requests in the I/O thread"),
    Internal("zeo_runner", "client", "the connection state the I/O thread keeps"),
    Internal("zeo_io", "protocol", "send requests without waiting for each answer"),
    Internal("zeo_io", "operational", "refuse a bulk read while disconnected"),
    Internal("zeo_protocol", "call_sync", "send one request, its answer a future"),
    Internal("zeo_buffer", "store", "the oids a streamed commit invalidates in the cache"),
    # RelStorage
    Internal("relstorage", "_options", "whether the database keeps history"),
    Internal("relstorage", "_adapter", "PostgreSQL: one-query change lists, lock capacity"),
    Internal("relstorage", "_load_connection", "list changes in the snapshot loads read"),
)


def missing(samples: Mapping[str, Any]) -> list[Internal]:
    """The internals that the given sample objects lack (entries without a sample are skipped)."""
    return [internal for internal in INTERNALS
            if internal.on in samples and not hasattr(samples[internal.on], internal.name)]
