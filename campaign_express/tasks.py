"""Background tasks: on Celery when CELERY_BROKER_URL is set, in-process otherwise.

Tasks are addressed by their dotted name (``campaigns.tasks.campaigns_advance``), which is
also their Celery name, so both runners run the same functions. Enqueue after commit
(`enqueue_on_commit`) so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class TaskRunner(Protocol):
    def enqueue(self, name: str, /, **kwargs: Any) -> None: ...


class CeleryRunner:
    """Sends tasks to the broker; the worker processes run them."""

    def enqueue(self, name: str, /, **kwargs: Any) -> None:
        from campaign_express.celery import app

        app.send_task(name, kwargs=kwargs)


class InProcessRunner:
    """Runs tasks on a small thread pool and the beat schedule on a timer thread.

    For embedded mode: one process, no broker. A task's exception is logged, as a Celery
    worker would, and does not stop the schedule.
    """

    def __init__(self, *, workers: int = 2, tick_seconds: float = 1.0) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self._tick_seconds = tick_seconds
        self._stopping = threading.Event()
        self._scheduler: threading.Thread | None = None

    def enqueue(self, name: str, /, **kwargs: Any) -> None:
        self._pool.submit(self.run, name, **kwargs)

    def run(self, name: str, /, **kwargs: Any) -> Any:
        """Run one task now, in this thread, with fresh database connections."""
        close_old_connections()
        try:
            return import_string(name)(**kwargs)
        except Exception:
            logger.exception("task %s failed", name)
            return None
        finally:
            close_old_connections()

    def start_schedule(self, entries: dict[str, dict]) -> None:
        self._scheduler = threading.Thread(target=self._beat, args=(entries,),
                                           name="task-beat", daemon=True)
        self._scheduler.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _beat(self, entries: dict[str, dict]) -> None:
        last_run: dict[str, datetime] = {}
        while not self._stopping.is_set():
            for key, entry in entries.items():
                # A first run right at start-up, as celery beat does.
                previous = last_run.get(key, datetime.fromtimestamp(0, UTC))
                due, _ = entry["schedule"].is_due(previous)
                if due:
                    last_run[key] = datetime.now(UTC)
                    self.enqueue(entry["task"], **entry.get("kwargs", {}))
            self._stopping.wait(self._tick_seconds)


class InlineRunner:
    """Runs each task at once in the caller's thread, as Celery's eager mode does: for tests,
    where a task must see the test's own transaction and its errors must surface."""

    def enqueue(self, name: str, /, **kwargs: Any) -> None:
        import_string(name)(**kwargs)


_runner: TaskRunner | None = None
_lock = threading.Lock()


def runner() -> TaskRunner:
    global _runner
    with _lock:
        if _runner is None:
            if settings.CELERY_BROKER_URL:
                _runner = CeleryRunner()
            elif getattr(settings, "TASKS_INLINE", False):
                _runner = InlineRunner()
            else:
                _runner = InProcessRunner()
        return _runner


def enqueue_on_commit(name: str, /, **kwargs: Any) -> None:
    transaction.on_commit(lambda: runner().enqueue(name, **kwargs))

