"""The storage writer: one thread stores what ingest and backfill hand it, in order, in batches;
a failed write keeps its batch and retries (nothing is dropped); an index that breaks under it is
rebuilt from the chunk files (docs/design/storage.md, invariants 6 and 9)."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gapless.backfill.jobs import JobStore
from gapless.storage.store import Fragment, FragmentStore, StorageError

log = logging.getLogger("gapless.recorder")

REBUILD_INTERVAL_S = 30.0


@dataclass
class _WriterTask:
    task: Callable
    future: concurrent.futures.Future

    def run(self, store: FragmentStore) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.task(store))
        except Exception as exc:  # handed to whoever waits on the future
            self.future.set_exception(exc)


class StorageWriter:
    def __init__(self, store: FragmentStore, jobs: Callable[[], JobStore]) -> None:
        self.store = store
        self.jobs = jobs  # the job table lives in the index: a rebuild carries it over
        self.queue: queue.Queue = queue.Queue()
        self.error: str | None = None
        self.failing_since: float | None = None  # monotonic; None while writes succeed
        # Fragments handed over and stored, counted apart so that their difference is never 0 while
        # one is on its way (taken off the queue, not yet committed): health says "stored" only then.
        self.received = 0
        self.stored = 0
        self._receiving = threading.Lock()  # ingest threads hand fragments over concurrently
        self.last_rebuild: float | None = None  # monotonic time of the last index rebuild at run time
        self._thread = threading.Thread(target=self._write_loop, name="storage-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Store what is queued, then end."""
        self.queue.put(None)
        self._thread.join(timeout=30)

    def put(self, fragment: Fragment) -> None:
        """Hand a fragment over to be stored (ingest's path; backfill submits tasks)."""
        with self._receiving:
            self.received += 1
        self.queue.put(fragment)

    def pending_fragments(self) -> int:
        """Received fragments not stored yet: queued, or in the writer's hands (retrying, disk full)."""
        return self.received - self.stored

    def submit(self, task) -> concurrent.futures.Future:
        """Run task(store) in the storage writer thread, in order with live fragments; the future
        carries its result or exception."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.queue.put(_WriterTask(task, future))
        return future

    def _write_loop(self) -> None:
        """Store fragments in batches; on error keep them and retry: nothing is dropped."""
        batch: list = []
        while True:
            if not batch:
                item = self.queue.get()
                if item is None:
                    break
                if isinstance(item, _WriterTask):
                    item.run(self.store)
                    continue
                batch.append(item)
            stop_after = False
            task = None
            while len(batch) < 64:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop_after = True
                    break
                if isinstance(item, _WriterTask):
                    task = item  # runs after this batch, keeping queue order
                    break
                batch.append(item)
            try:
                self.store.write(batch)
                self.stored += len(batch)
                batch = []
                self.error = None
                self.failing_since = None
            except StorageError as exc:
                if exc.index_damaged and self.rebuild_index(str(exc)):
                    continue  # the batch again, into the rebuilt index
                self._write_failed(exc, len(batch))
            except OSError as exc:
                self._write_failed(exc, len(batch))
            if task is not None:
                if batch:
                    self.queue.put(task)  # behind what arrived meanwhile; the batch is retried first
                else:
                    task.run(self.store)
            if stop_after:
                if batch:
                    try:
                        self.store.write(batch)
                        self.stored += len(batch)
                    except OSError as exc:
                        log.error("at shutdown, %d fragments could not be stored: %s", len(batch), exc)
                break
        self.store.close()

    def _write_failed(self, exc: OSError, held: int) -> None:
        self.error = f"{exc.strerror or exc} (keeping {held} fragments, retrying)"
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        log.error("storage write failed: %s", self.error)
        time.sleep(1.0)

    def rebuild_index(self, why: str) -> bool:
        """The index broke under a running recorder: rebuild it from the chunk files, in the writer
        thread (fragments wait in the queue meanwhile), and carry on (storage.md, invariant 9). At
        most once per REBUILD_INTERVAL_S: an index that breaks again at once is a failing disk,
        retried like any write error. Returns whether it rebuilt."""
        now = time.monotonic()
        if self.last_rebuild is not None and now - self.last_rebuild < REBUILD_INTERVAL_S:
            return False
        self.last_rebuild = now
        try:
            report = self.reindex(f"damaged while recording ({why})")
        except (OSError, sqlite3.Error) as failure:
            log.error("storage %s: rebuilding the index failed: %s", self.store.root, failure)
            return False
        log.warning("storage %s: index rebuilt while recording: %s", self.store.root, report)
        return True

    def reindex(self, why: str) -> dict:
        """Rebuild the index from the chunk files, keeping the backfill jobs it held if they can
        still be read (a connection open before the damage may read them from its cache)."""
        log.error("storage %s: the index is %s: rebuilding it from the chunk files", self.store.root, why)
        try:
            jobs = self.jobs().all_rows()
        except sqlite3.Error as failure:
            log.error(
                "storage %s: backfill jobs lost with the index (%s); gap scans find the gaps again",
                self.store.root,
                failure,
            )
            jobs = []
        report = self.store.reindex()
        self.jobs().reinstate(jobs)
        self.store.rebuilt = {"why": why, **report}
        return report
