"""The cache store: layout, streaming writes, atomic commit, lookup, eviction, verification.

This is storage's one face: the proxy imports from here and never from a module of it
(tests/unit/test_storage_face.py checks). `Store` is the cache as a running proxy uses it;
`scan` and `Scrubber` are the checks of `pixcache verify` and of the background scrubber."""

from storage.clock import SYSTEM_CLOCK, Clock
from storage.commit import CommitRefused
from storage.derivatives import keys_derived, rank_least_recent
from storage.entry import CorruptEntry, EntryMeta, Problem
from storage.errors import StorageFault
from storage.fileid import FileId
from storage.keylock import KeyLock
from storage.layout import primary_key_hash
from storage.lookup import OpenEntry
from storage.scrub import Scrubber
from storage.store import Bounds, PurgedMeanwhile, Store
from storage.vary import Found, Selector
from storage.verify import NotACache, scan
from storage.walk import TEMP_GRACE
from storage.writer import Writer

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "TEMP_GRACE",
    "Bounds",
    "CommitRefused",
    "CorruptEntry",
    "EntryMeta",
    "FileId",
    "Found",
    "KeyLock",
    "NotACache",
    "OpenEntry",
    "Problem",
    "PurgedMeanwhile",
    "Scrubber",
    "Selector",
    "StorageFault",
    "Store",
    "Writer",
    "primary_key_hash",
    "keys_derived",
    "rank_least_recent",
    "scan",
]
