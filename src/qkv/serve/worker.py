"""One model, many requests: model calls run one at a time in a worker thread.

The event loop only hands jobs over and awaits their futures, so `/health` and the page stay
responsive while a translation runs. Translation requests that wait in the queue together and
ask for the same deterministic search (greedy or beam, same options) are decoded as one batch;
sampling requests always run alone, so a seed gives the same text whatever else is queued.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from qkv.search import stoppable
from qkv.serve.engine import Engine, ServeError
from qkv.serve.schemas import MAX_BATCH, TranslateRequest

MAX_QUEUED = 256              # jobs waiting beyond this are refused with 503
MAX_MERGED_TEXTS = 2 * MAX_BATCH


@dataclass
class Job:
    call: Callable[[], Any] | None = None                   # a call that runs alone
    request: TranslateRequest | None = None                 # or a translation that may be merged
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)   # nobody waits for the result

    @property
    def merge_key(self) -> str | None:
        if self.request is None or self.request.sample:
            return None
        return self.request.model_dump_json(exclude={"texts"})


_STOP = Job()


class ModelWorker:
    """Runs `Engine` calls in one background thread, in arrival order (merged batches aside)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.backlog: deque[Job] = deque()                   # taken off the queue, not yet run
        self.pending = 0
        self.lock = threading.Lock()
        self.skipped = 0                                     # jobs cancelled before they ran
        self.thread = threading.Thread(target=self._loop, name="qkv-model-worker", daemon=True)
        self.thread.start()

    # Futures follow concurrent.futures: `future.cancel()` (e.g. when the client disconnects)
    # succeeds while the job waits, and the worker then skips it.

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn()` on the worker thread."""
        return self._put(Job(call=fn))

    def translate(self, request: TranslateRequest) -> Future:
        """Translate `request.texts`, possibly in one batch with other waiting requests."""
        return self._put(Job(request=request))

    def abandon(self, future: Future) -> None:
        """The client of `future` went away: a waiting job is skipped, a running one stops decoding
        at its next step (qkv.search.stoppable; a merged batch stops once all its clients are gone)."""
        future.cancel()
        job = getattr(future, "qkv_job", None)
        if job is not None:
            job.abandoned.set()

    def stop(self) -> None:
        self.jobs.put(_STOP)
        self.thread.join(timeout=10)

    def _put(self, job: Job) -> Future:
        with self.lock:
            if self.pending >= MAX_QUEUED:
                raise ServeError(f"the server is busy ({self.pending} requests queued); retry shortly", 503)
            self.pending += 1
        job.future.qkv_job = job                             # for abandon(future)
        job.future.add_done_callback(self._done)
        self.jobs.put(job)
        return job.future

    def _done(self, _: Future) -> None:
        with self.lock:
            self.pending -= 1

    # --- the worker thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            group = self._next_group()
            if group[0] is _STOP:
                return
            # a job whose client went away was cancelled while it waited: it never runs
            live = [job for job in group if job.future.set_running_or_notify_cancel()]
            self.skipped += len(group) - len(live)
            group = live
            if not group:
                continue
            if group[0].call is not None:
                _settle(group[0], group[0].call)
            else:
                self._translate_group(group)

    def _next_group(self) -> list[Job]:
        """The next job, with every waiting translation that can share its batch."""
        job = self.backlog.popleft() if self.backlog else self.jobs.get()
        key = job.merge_key
        if key is None:
            return [job]
        while True:
            try:
                self.backlog.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        group, rest, n = [job], deque(), len(job.request.texts)
        for other in self.backlog:
            if other.merge_key == key and n + len(other.request.texts) <= MAX_MERGED_TEXTS:
                group.append(other)
                n += len(other.request.texts)
            else:
                rest.append(other)
        self.backlog = rest
        return group

    def _translate_group(self, group: list[Job]) -> None:
        if len(group) == 1:
            _settle(group[0], lambda: self.engine.translate(group[0].request))
            return
        texts = [t for job in group for t in job.request.texts]
        try:
            with stoppable(lambda: all(job.abandoned.is_set() for job in group)):
                results = self.engine.translate(group[0].request.model_copy(update={"texts": texts}))
        except Exception:                       # one bad text must not fail its neighbours: run each alone
            for job in group:
                _settle(job, lambda job=job: self.engine.translate(job.request))
            return
        for job in group:
            n = len(job.request.texts)
            job.future.set_result(results[:n])
            results = results[n:]


def _settle(job: Job, fn: Callable[[], Any]) -> None:
    try:
        with stoppable(job.abandoned.is_set):        # decoding stops if the client goes away
            job.future.set_result(fn())
    except BaseException as exc:  # handed to the request that asked; the worker keeps going
        job.future.set_exception(exc)
