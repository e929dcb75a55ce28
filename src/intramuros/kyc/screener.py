"""The in-memory screening index of the active list versions, swapped atomically.

Readers take ``self.index`` once per screening (one reference read, atomic in
Python) and use that snapshot to the end, so a screening sees either the old
set of lists or the new one. A refresh builds the new index aside, then swaps
the reference; only one refresh runs at a time, others keep the old snapshot.
"""

from __future__ import annotations

import threading
import time

from intramuros.kyc.index import ScreeningIndex
from intramuros.kyc.model import Entity
from intramuros.kyc.store import KycStore


class Screener:
    """Keeps a :class:`ScreeningIndex` in step with the lists' active versions."""

    def __init__(self, store: KycStore, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.index = ScreeningIndex()
        self._checked = 0.0
        self._lock = threading.Lock()

    def current(self) -> ScreeningIndex:
        """The index to screen with, refreshed first if the check interval has passed."""
        if time.monotonic() - self._checked >= self.refresh_seconds:
            self.refresh()
        return self.index

    def refresh(self, force: bool = False) -> bool:
        """Rebuild if the active versions changed; True if a new index was swapped in."""
        if not self._lock.acquire(blocking=force):
            return False  # someone else is rebuilding: keep screening on the old one
        try:
            self._checked = time.monotonic()
            for _attempt in range(5):
                versions = self.store.active_versions()
                if versions == self.index.versions:
                    return False
                entities: list[Entity] = []
                complete = True
                for _name, (version, count) in sorted(versions.items()):
                    loaded = self.store.load_version(version)
                    if len(loaded) != count:  # pruned under us: read the pointers again
                        complete = False
                        break
                    entities.extend(loaded)
                if complete:
                    self.index = ScreeningIndex.build(entities, versions)
                    return True
            return False
        finally:
            self._lock.release()
