"""Batched generation across requests: one worker thread per served model decodes the waiting
jobs together (up to `max_batch` rows), one forward pass of the model per step for every row
still running (`steerable.decoding.Rows`: each row its own sampling, stops, stream and
condition); a job that arrives while rows run joins them at the next step.

Steering itself is prompt text (RiC, MOSLIM) or a condition (NP-DPO's z, a mixture of experts'
row weights), so requests with different steering share one batch.

Images (`ImageEngine`) take the same bounded queue and batching (`JobQueue`): each row is a
caption with its tags and its own seed, so rows of different steering are sampled together,
grouped only by guidance scale and step count, and a row's image does not depend on its batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from steerable.decoding import Conditioner, Job, PrefixCache, Rows, RowStreamer, cache_joinable
from steerable.generation import stop_token_ids


class JobQueue:
    """A bounded queue of jobs and one worker thread that takes them in batches of up to
    `max_batch` rows: what the text and the image engines share. `submit` queues a request's
    jobs all or none and raises queue.Full when `max_queue` jobs already wait; an idle worker
    starts on the first job after waiting `batch_wait` seconds for others (unless the previous
    batch was a single job: a client sending one request at a time does not pay it). A
    subclass's `_work` is the worker's loop; `_finish` marks a job done."""

    def __init__(self, max_batch: int, max_queue: int, batch_wait: float):
        self.max_batch, self.batch_wait = max_batch, batch_wait
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.queueing = threading.Lock()  # a request's jobs enter the queue together
        self.largest_batch = 0  # the most rows run together (observability, tests)
        self.finish_reasons: Counter[str] = Counter()  # stop / length / cancelled / done, so far
        self.worker = threading.Thread(target=self._work, daemon=True, name="steerable-batch")

    def _work(self) -> None:
        raise NotImplementedError

    def submit(self, jobs: list) -> None:
        """Queue all of `jobs` or none (a request with n > 1 is not half-queued)."""
        with self.queueing:
            if self.jobs.maxsize and self.jobs.qsize() + len(jobs) > self.jobs.maxsize:
                raise queue.Full
            for job in jobs:
                self.jobs.put_nowait(job)

    def _gather(self, last: int | None) -> list:
        """The next batch to start: waits for a first job; requests that arrive together (a burst
        of clients) start together: while others are about, it waits up to `batch_wait` seconds
        for more; a lone client (the previous batch was one job too) does not pay the wait."""
        batch = [self.jobs.get()]
        deadline = time.monotonic() + (0 if last == 1 and self.jobs.empty() else self.batch_wait)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _newcomers(self, room: int) -> list:
        """Jobs already waiting, up to `room`, without waiting for more."""
        batch = []
        while len(batch) < room:
            try:
                batch.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _finish(self, job) -> None:
        job.finish_reason = job.finish_reason or "cancelled"
        self.finish_reasons[job.finish_reason] += 1
        job.done.set()
        if job.on_done is not None:
            job.on_done()


class BatchEngine(JobQueue):
    """Text: the jobs decoded together, up to `max_batch` rows at a time (`JobQueue`'s queue and
    batching); jobs queued while rows run join them at the next step, as rows leave room.
    `prefix_cache` keeps shared prompt prefixes' keys and values (`PrefixCache`); it is off for
    a model with a `conditioner` (the method's `Steering.conditioner`: NP-DPO's FiLM), whose
    condition changes every layer's keys and values. New jobs are prefilled `prefill_rows` at a
    time, shortest prompts first (0: all at once)."""

    def __init__(
        self,
        model,
        tokenizer,
        conditioner: Conditioner | None = None,
        max_batch: int = 32,
        max_queue: int = 256,
        batch_wait: float = 0.02,
        prefix_cache: bool = True,
        prefill_rows: int = 8,
    ):
        super().__init__(max_batch, max_queue, batch_wait)
        self.model, self.tokenizer, self.conditioner = model, tokenizer, conditioner
        self.prefixes = PrefixCache(model, tokenizer) if prefix_cache and conditioner is None else None
        self.prefill_rows = prefill_rows
        # whether prefill groups can be joined (a conditioned model's are prefilled whole)
        self.can_join = conditioner is None and prefill_rows > 0 and cache_joinable(model)
        self.lock = threading.Lock()  # one forward pass at a time on the model
        self.worker.start()

    def _start(self, batch: list[Job], streamer: RowStreamer) -> Rows | None:
        """Prefill the live jobs of `batch` and draw their first tokens (a client that left is
        skipped); the rows still going, or None. Jobs of similar prompt length are prefilled
        together, `prefill_rows` at a time, and joined: that costs less than one padded pass,
        where every prompt is padded to the longest."""
        for job in batch:
            if job.cancelled.is_set():
                self._finish(job)
        live = sorted((j for j in batch if not j.cancelled.is_set()), key=lambda j: len(j.text))
        rows = None
        for chunk in self._chunks(live):
            try:
                with self.lock:
                    part = Rows.prefill(
                        self.model, self.tokenizer, chunk, streamer, self.conditioner, self.prefixes
                    )
                self._step(part)
            except Exception as err:  # its jobs fail, not the rows already running
                for job in chunk:
                    if not job.done.is_set():
                        job.error = err
                        self._finish(job)
                continue
            if rows is None:
                rows = part
            else:
                rows.join(part)
        return rows

    def _chunks(self, jobs: list[Job]) -> list[list[Job]]:
        """`jobs` in prefill groups: `prefill_rows` at a time where rows can be joined (a plain
        dynamic cache), all at once otherwise."""
        size = max(1, (self.prefill_rows if self.can_join else 0) or len(jobs))
        return [jobs[k : k + size] for k in range(0, len(jobs), size)]

    def _step(self, rows: Rows) -> None:
        """One step of `rows`; the jobs that ended are done. A failed step fails its rows'
        requests, not the server (and is raised on, so the rows are dropped)."""
        try:
            with self.lock:
                ended = rows.step()
        except Exception as err:
            for job in rows.jobs:
                job.error = err
                self._finish(job)
            raise
        for job in ended:
            self._finish(job)

    def _work(self) -> None:
        streamer = RowStreamer(self.tokenizer, set(stop_token_ids(self.model, self.tokenizer)))
        rows, last = None, None  # the rows being decoded; the size of the last batch started
        while True:
            try:
                if rows is None or not rows.jobs:
                    batch = self._gather(last)
                    last = len(batch)
                    rows = self._start(batch, streamer)
                else:
                    # requests that came while the rows ran join them at this step
                    room = self.max_batch - len(rows)
                    newcomers = self._newcomers(room) if room > 0 and rows.joinable() else []
                    if newcomers:
                        empty = Rows(self.model, streamer, self.conditioner)
                        rows.join(self._start(newcomers, streamer) or empty)
                    if rows.jobs:
                        self._step(rows)
                if rows is not None:
                    self.largest_batch = max(self.largest_batch, len(rows))
            except Exception as err:  # a failure fails its requests, never the worker
                for job in rows.jobs if rows is not None else []:
                    if not job.done.is_set():
                        job.error = err
                        self._finish(job)
                rows = None


@dataclass
class ImageJob:
    """One image to make: the caption with its tags (what the text encoder reads), its own seed
    (its starting noise, so its image does not depend on its batch mates), and the sampling it
    is grouped by."""

    text: str
    seed: int
    guidance: float
    steps: int
    on_done: Callable[[], None] | None = None  # called (from the worker thread) once it is done
    # filled in by the engine
    image: object = None  # a PIL image
    finish_reason: str | None = None
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class ImageEngine(JobQueue):
    """Images: the waiting jobs sampled together by `policy.sample(texts, guidance, steps, seeds,
    batch_size)` (an image policy, such as RiC's `ImagePolicy`), up to `max_batch` rows, in one
    group per (guidance, steps); a job whose client left before its batch started is skipped."""

    def __init__(self, policy, max_batch: int = 32, max_queue: int = 256, batch_wait: float = 0.02):
        super().__init__(max_batch, max_queue, batch_wait)
        self.policy = policy
        self.worker.start()

    def _work(self) -> None:
        last = None  # the size of the last batch started
        while True:
            batch = self._gather(last)
            last = len(batch)
            groups: dict[tuple[float, int], list[ImageJob]] = {}
            for job in batch:
                if job.cancelled.is_set():
                    self._finish(job)
                else:
                    groups.setdefault((job.guidance, job.steps), []).append(job)
            for (guidance, steps), jobs in groups.items():
                self.largest_batch = max(self.largest_batch, len(jobs))
                try:
                    images = self.policy.sample(
                        [j.text for j in jobs], guidance, steps, [j.seed for j in jobs], self.max_batch
                    )
                except Exception as err:  # a failure fails its requests, never the worker
                    for job in jobs:
                        job.error = err
                else:
                    for job, image in zip(jobs, images, strict=True):
                        job.image, job.finish_reason = image, "done"
                for job in jobs:
                    self._finish(job)
