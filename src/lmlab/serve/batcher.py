"""Dynamic batching: one worker thread owns the models; requests that arrive together share a batch.

Each generation request becomes one or more rows (`Row`). The worker takes the oldest row,
waits up to ``batch_window_ms`` for more rows for the same model (rows already waiting are
taken at once), and decodes up to ``max_batch_size`` rows in one `stream_batch` call (left
padding, one KV cache, each row with its own sampling config). Rows that arrive while a batch
decodes wait for the next one (this is request-level batching, not continuous batching).
Every batch of a model decodes with the model's one `PackedWeights` (`ModelEntry.pack`), which
also pads the prefill's products to a few row counts, so that the kernels a server builds stay a
bounded set whatever prompt lengths and batch sizes it sees.
``max_batch_size=1`` turns batching off: requests are decoded one after another.

Every other use of a model (attention maps, task pipelines) runs on the same thread as a
`Call`, so a model is never used by two threads at once. A task request's texts are split into
calls of at most ``max_batch_size`` texts, queued together and run in order, so that other
requests are served between them and a request that is cancelled or past its deadline stops
between two calls (a call already running finishes; its result is dropped).

Admission (backpressure): at most ``max_batch_size + max_queue`` rows (or task texts) are in flight; beyond
that `admit` says no and the server answers 429 with ``Retry-After``. A row whose client went
away (`Row.cancel`) is dropped from its batch with `BatchStream.cancel` — no further decoding is
spent on it, and a batch whose rows are all gone stops — and a row past its deadline ends with
``finish_reason "timeout"``. Events reach the request's asyncio queue via
``loop.call_soon_threadsafe``.

Isolation: when a batch raises, each of its unfinished rows is decoded again alone; the row
that raises alone ends with an error of its own and the others finish normally. Every row
carries a seed (the server draws one when a request gives none), so a row decoded again
repeats the text it already sent, and only what goes beyond it is sent (`Row.deliver`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("lmlab.serve")


@dataclass
class Row:
    entry: Any  # ModelEntry
    prompt: str
    config: Any  # GenerationConfig
    deadline: float  # time.monotonic()
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    finished: bool = False
    completion: Any = None  # generate.Completion once done
    sent: str = ""  # the text delivered so far
    redone: str | None = None  # while decoded again after its batch failed: the text produced so far

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, kind: str, *payload: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, *payload))
        except RuntimeError:  # the event loop is gone (shutdown)
            self.cancelled = True

    def deliver(self, text: str, reason: str | None) -> None:
        """Send a piece of text; while decoding again, only what goes beyond the text already sent
        (which must come out the same, or the row fails: `Diverged`)."""
        if self.redone is not None and reason == "timeout":  # out of time while catching up: nothing new
            text, self.redone = "", None
        if self.redone is not None:
            self.redone += text
            n = min(len(self.redone), len(self.sent))
            if self.redone[:n] != self.sent[:n] or (reason is not None and len(self.redone) < len(self.sent)):
                raise Diverged("decoding the row again gave another text than the one already sent")
            if len(self.redone) <= len(self.sent) and reason is None:
                return
            text, self.redone = self.redone[len(self.sent):], None
        self.sent += text
        self.emit("delta", text, reason)

    def fail(self, error: BaseException) -> None:
        self.finished = True
        self.emit("error", error)


@dataclass
class Call:
    """A function to run on the model thread (attention maps, a chunk of a task's texts)."""
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float = float("inf")  # time.monotonic(); a call still waiting then is not run
    size: int = 1  # the slots it takes in admission (texts of a task request)
    cancelled: bool = False

    def cancel(self) -> None:
        """From the event loop: do not run it (if not started) and drop its result."""
        self.cancelled = True
        self.future.cancel()


class Batcher:
    def __init__(self, max_batch_size: int = 8, max_queue: int = 64, batch_window_ms: float = 5.0):
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.window = batch_window_ms / 1000
        self.cond = threading.Condition()
        self.pending: deque[Row | Call] = deque()
        self.active = 0  # rows (or calls) being worked on now
        self.stopping = False
        self.steps_done = 0  # decoder forward passes of finished batches
        self.current = None  # the BatchStream being decoded
        self.batches = 0
        self.thread = threading.Thread(target=self._work, name="lmlab-batcher", daemon=True)
        self.thread.start()

    # -- request side (event loop thread) -------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Slots taken: rows, and the texts of calls, waiting or being worked on."""
        return sum(j.size if isinstance(j, Call) else 1 for j in self.pending) + self.active

    @property
    def steps(self) -> int:
        """Decoder forward passes run so far, the current batch included (tests count them)."""
        cur = self.current
        return self.steps_done + (cur.steps if cur is not None else 0)

    def admit(self, rows: list[Row]) -> bool:
        """Queue the rows, or return False when the server is full (nothing is queued then)."""
        with self.cond:
            if self.stopping or self.in_flight + len(rows) > self.max_batch_size + self.max_queue:
                return False
            self.pending.extend(rows)
            self.cond.notify()
            return True

    def submit(self, calls: list[Call]) -> bool:
        """Queue the calls (run in order), or return False when the server is full (nothing is queued then)."""
        with self.cond:
            if self.stopping or self.in_flight + sum(c.size for c in calls) > self.max_batch_size + self.max_queue:
                return False
            self.pending.extend(calls)
            self.cond.notify()
            return True

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the model thread, no deadline (raises BusyError when full)."""
        loop = asyncio.get_running_loop()
        job = Call(fn, loop, loop.create_future())
        if not self.submit([job]):
            raise BusyError()
        return await job.future

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for job in self.pending:
                if isinstance(job, Row):
                    job.fail(ShuttingDown("server is shutting down"))
                else:
                    self._settle(job, False, ShuttingDown("server is shutting down"))
            self.pending.clear()
            self.cond.notify_all()

    # -- worker side ----------------------------------------------------------------------------

    def _take(self) -> list[Row] | Call | None:
        with self.cond:
            while not self.pending and not self.stopping:
                self.cond.wait()
            if self.stopping:
                return None
            first = self.pending.popleft()
            if isinstance(first, Call):
                self.active += first.size
                return first
            batch, end = [first], time.monotonic() + self.window
            while len(batch) < self.max_batch_size:
                for job in list(self.pending):
                    if len(batch) >= self.max_batch_size:
                        break
                    if isinstance(job, Row) and job.entry is first.entry:
                        self.pending.remove(job)
                        batch.append(job)
                left = end - time.monotonic()
                if len(batch) >= self.max_batch_size or left <= 0 or self.stopping:
                    break
                self.cond.wait(left)
            self.active += len(batch)
            return batch

    def _work(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            n = job.size if isinstance(job, Call) else len(job)
            try:
                if isinstance(job, Call):
                    self._run_call(job)
                else:
                    self._run_batch(job)
            except Exception:  # never let the worker die; the rows were told in _run_batch
                log.exception("model worker: unexpected error")
            finally:
                with self.cond:
                    self.active -= n
            del job  # else the last batch's rows (prompts, texts, events) live on while the worker waits

    @staticmethod
    def _settle(job: Call, ok: bool, value: Any) -> None:
        def settle() -> None:
            if not job.future.done():
                (job.future.set_result if ok else job.future.set_exception)(value)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is gone (shutdown)
            pass

    def _run_call(self, job: Call) -> None:
        if job.cancelled:  # the request is gone (client left, timed out, an earlier call failed)
            return
        if time.monotonic() > job.deadline:
            value, ok = TimeoutError("request_timeout_s passed before the call ran"), False
        else:
            try:
                value, ok = job.fn(), True
            except BaseException as e:  # handed to the awaiting request
                value, ok = e, False
        self._settle(job, ok, value)

    def _run_batch(self, rows: list[Row]) -> None:
        """Decode `rows` as one batch. When the batch raises, each row that had not finished is
        decoded again alone (its text so far is not sent twice: every row carries a seed, so it
        comes out the same), so an exception that one row causes ends that row only."""
        from lmlab.generate import stream_batch

        now = time.monotonic()
        live = []
        for r in rows:  # rows that died while waiting are not decoded at all
            if r.cancelled:
                r.finished = True
            elif now > r.deadline:
                r.finished = True
                r.deliver("", "timeout")
            else:
                live.append(r)
        if not live:
            return
        entry = live[0].entry
        self.batches += 1
        bs, again = None, []
        try:
            bs = stream_batch(entry.model, entry.tokenizer, [r.prompt for r in live], [r.config for r in live],
                              pack=entry.pack)
            self.current = bs
            for d in bs:
                row = live[d.index]
                if not row.finished:
                    if d.finish_reason is not None:
                        row.finished = True
                        row.completion = bs.completions[d.index]
                    row.deliver(d.text, d.finish_reason)
                self._sweep(bs, live)
                if all(r.finished for r in live):
                    break
        except Exception as e:
            unfinished = [r for r in live if not r.finished]
            if len(live) > 1:
                log.warning("a batch of %d rows for model %s failed (%s); decoding its %d unfinished rows alone",
                            len(live), entry.name, type(e).__name__, len(unfinished))
                again = unfinished
            else:
                log.error("generation failed for model %s: %s: %s", entry.name, type(e).__name__,
                          str(e).splitlines()[0][:200] if str(e) else "")
                for r in unfinished:
                    r.fail(e)
        finally:
            if bs is not None:
                bs.close()
                self.steps_done += bs.steps
            self.current = None
        for r in again:
            r.redone = "" if r.sent else None
            self._run_batch([r])

    @staticmethod
    def _sweep(bs, rows: list[Row]) -> None:
        now = time.monotonic()
        for i, r in enumerate(rows):
            if r.finished:
                continue
            if r.cancelled:
                r.finished = True
                bs.cancel(i)
            elif now > r.deadline:
                r.finished = True
                bs.cancel(i)
                r.deliver("", "timeout")


class BusyError(Exception):
    """The server's queue is full."""


class ShuttingDown(Exception):
    """The server stopped before the row was decoded."""


class Diverged(Exception):
    """A row decoded again did not give the text it had already sent."""
