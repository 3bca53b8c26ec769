"""Batched generation across requests: one worker thread per served model takes the waiting jobs
(up to `max_batch`) and decodes them together, one forward pass of the model per step for every
row still running.

The decode loop is ours, not `model.generate`, for one reason: `generate` runs a batch until
its longest row is done, while most answers end early (the demo's RiC answers average 13 of 32
tokens), so most of a batch's steps would be spent on finished rows. Here a finished row leaves
at once (its keys and values dropped with the cache's own `batch_select_indices`) and each step
costs only the rows still running (benchmarks/RESULTS.md, serving throughput). The model's
forward, its KV cache and its attention masks are transformers' own.

Each row keeps its own settings inside the shared batch:
    sampling   `draw_tokens` draws row i's next token from its own temperature / top-p
               distribution with its own `torch.Generator` (seeded by the request), so what else
               shares the batch does not change its draws; temperature 0 is argmax
    stopping   a row ends at its own max_tokens, at a stop string, at the end of its turn, or
               when its client has gone (a disconnected stream frees its row at the next step)
    streaming  `RowStreamer` hands each row its new text as it comes
    latent     NP-DPO rows carry their own z, stacked for the FiLM layers
    prefix     `PrefixCache` keeps the keys and values of prompt prefixes that requests share
               (the chat template's system turn); a batch whose rows all start with one skips
               its prefill, solo and batched requests alike (not for NP-DPO: FiLM changes every
               layer's keys and values with the row's z)

Steering itself is prompt text (RiC, MOSLIM) or z (NP-DPO), so requests with different
steering share one batch.
"""

from __future__ import annotations

import copy
import queue
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from steerable.generation import cut_to_top_p, stop_token_ids


@dataclass
class Job:
    """One completion to generate: the rendered prompt, its sampling, and where its text goes."""

    text: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    latent: torch.Tensor | None = None  # (1, Z), NP-DPO
    on_text: Callable[[str], None] | None = None  # each new piece of text, from the worker thread
    on_done: Callable[[], None] | None = None  # called (from the worker thread) once it is done
    # filled in by the engine
    output: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def draw_tokens(
    scores: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor
) -> torch.Tensor:
    """Each row's next token (B,) by inverse-CDF sampling with its own `uniform` number in [0, 1)
    from its temperature-scaled distribution, cut to its top-p nucleus (a token is kept while
    the mass before it is < top_p, as in `generation.TopKSampler`); temperature 0 is argmax.

    No full sort of the vocabulary: a nucleus is looked for among the 64 most likely tokens,
    then 4x as many, until every row's is found (a sort of 32 x 49,152 scores costs more on
    2 CPU cores than the decode step itself; benchmarks/RESULTS.md, serving throughput)."""
    greedy = temperature <= 0
    scores = scores.float()
    # shifted so that the best token is 0: a tiny temperature then gives exactly its argmax
    shifted = scores - scores.amax(dim=-1, keepdim=True)
    probs = torch.softmax(shifted / torch.where(greedy, 1.0, temperature)[:, None], dim=-1)
    greedy = greedy | ~torch.isfinite(probs).all(dim=-1)  # a row with no finite score: argmax
    tokens = inverse_cdf(probs, uniform)
    nucleus = (top_p < 1) & ~greedy
    if nucleus.any():
        rows = nucleus.nonzero()[:, 0]
        tokens[rows] = _draw_nucleus(probs[rows], top_p[rows], uniform[rows])
    if greedy.any():
        rows = greedy.nonzero()[:, 0]
        tokens[rows] = scores[rows].argmax(dim=-1)
    return tokens


def _draw_nucleus(probs: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    width = min(64, probs.shape[-1])
    while True:
        top = torch.topk(probs, width, dim=-1)  # most likely first
        if width == probs.shape[-1] or bool((top.values.sum(dim=-1) >= top_p).all()):
            break  # every row's nucleus lies among the `width` most likely tokens
        width = min(4 * width, probs.shape[-1])
    index = inverse_cdf(cut_to_top_p(top.values, top_p[:, None]), uniform)
    return top.indices.gather(-1, index[:, None])[:, 0]


def inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Each row's index drawn in proportion to its non-negative `weights` (need not sum to 1),
    by its own `uniform` number in [0, 1)."""
    cdf = weights.cumsum(dim=-1)
    index = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True)[:, 0]
    return index.clamp_(max=weights.shape[-1] - 1)


class RowStreamer:
    """Each step's tokens -> each row's new text (decoded from all its tokens so far, so
    multi-byte characters come out whole), with the row's stop strings applied; sets a row's
    `finish_reason` when it ends."""

    def __init__(self, jobs: list[Job], tokenizer, stops: set[int]):
        self.jobs, self.tokenizer, self.stops = jobs, tokenizer, stops
        self.tokens: list[list[int]] = [[] for _ in jobs]

    def put(self, rows: list[int], tokens: list[int]) -> None:
        """Row `rows[i]` (an index into the jobs) drew `tokens[i]`."""
        for row, token in zip(rows, tokens, strict=True):
            job = self.jobs[row]
            if token in self.stops:
                job.finish_reason = "stop"
                continue
            self.tokens[row].append(token)
            job.completion_tokens = len(self.tokens[row])
            if job.completion_tokens >= job.max_tokens:
                job.finish_reason = "length"  # end() emits what is left
                continue
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # half a character: wait for the rest
            text, stopped = cut_at_stop(text, job.stop)
            if stopped:
                job.finish_reason = "stop"
            self.emit(job, text)

    def emit(self, job: Job, text: str) -> None:
        """Hand on the part of `text` not yet emitted."""
        if text.startswith(job.output) and len(text) > len(job.output):
            new, job.output = text[len(job.output) :], text
            if job.on_text is not None:
                job.on_text(new)

    def end(self) -> None:
        for row, job in enumerate(self.jobs):
            if job.finish_reason is None and job.cancelled.is_set():
                job.finish_reason = "cancelled"  # its client went away; the row stopped early
            if job.finish_reason is None:
                job.finish_reason = "length" if job.completion_tokens >= job.max_tokens else "stop"
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True).rstrip("\ufffd")
            self.emit(job, cut_at_stop(text, job.stop)[0])


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to its first stop string, and whether there was one."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def common_prefix(rows: list[list[int]]) -> int:
    """The length of the token prefix every row shares."""
    first, n = rows[0], min(len(r) for r in rows)
    for row in rows[1:]:
        n = next((i for i in range(n) if row[i] != first[i]), n)
    return n


class PrefixCache:
    """The keys and values of prompt prefixes that requests share, most recently used first (at
    most `size`). `learn(texts)` keeps the prefix the texts' tokens share (the server learns its
    chat template's from two rendered conversations; every batch of distinct prompts teaches its
    own); `lookup(rows)` is the longest kept prefix that all rows start with and are longer than."""

    def __init__(self, model, tokenizer, size: int = 8):
        self.model, self.tokenizer, self.size = model, tokenizer, size
        self.kept: OrderedDict[tuple[int, ...], object] = OrderedDict()  # prefix -> DynamicCache (1 row)
        self.hits = 0  # batches that skipped a prefix's prefill (observability, tests)

    def learn(self, texts: list[str]) -> None:
        rows = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        self.keep(rows)

    @torch.inference_mode()
    def keep(self, rows: list[list[int]]) -> None:
        n = common_prefix(rows) if len(rows) > 1 else 0
        n = min(n, min(len(r) for r in rows) - 1)  # a row keeps at least one token to prefill
        if n < 2 or tuple(rows[0][:n]) in self.kept:
            return
        ids = torch.tensor([rows[0][:n]], device=self.model.device)
        self.kept[tuple(rows[0][:n])] = self.model(input_ids=ids, use_cache=True).cache
        while len(self.kept) > self.size:
            self.kept.popitem(last=False)

    @torch.inference_mode()
    def lookup(self, rows: list[list[int]]) -> tuple[int, object | None]:
        """(prefix length, a fresh cache of it for every row) or (0, None)."""
        shortest = min(len(r) for r in rows)
        best = None
        for prefix in self.kept:
            n = len(prefix)
            if n < shortest and (best is None or n > len(best)) and all(tuple(r[:n]) == prefix for r in rows):
                best = prefix
        if best is None:
            return 0, None
        self.kept.move_to_end(best)
        self.hits += 1
        cache = copy.deepcopy(self.kept[best])
        cache.batch_repeat_interleave(len(rows))
        return len(best), cache


@torch.inference_mode()
def run_batch(model, tokenizer, jobs: list[Job], film=None, prefixes: PrefixCache | None = None) -> None:
    """Decode every job's completion together. Rows are laid out as [shared prefix | padding |
    the rest of the prompt], so every row's prompt ends at the same position (positions follow
    the attention mask, so the padding is skipped); with a cached prefix its keys and values are
    passed in and only the rest is prefilled. A row that ends leaves the batch at that step."""
    rows = tokenizer([j.text for j in jobs], add_special_tokens=False)["input_ids"]
    for job, row in zip(jobs, rows, strict=True):
        job.prompt_tokens = len(row)
    cached, cache = 0, None
    if prefixes is not None:
        if len({tuple(r) for r in rows}) > 1:
            prefixes.keep(rows)
        cached, cache = prefixes.lookup(rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows) - cached
    ids = [r[:cached] + [pad] * (width - len(r) + cached) + r[cached:] for r in rows]
    mask = [[1] * cached + [0] * (width - len(r) + cached) + [1] * (len(r) - cached) for r in rows]
    device = model.device
    mask = torch.tensor(mask, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = torch.tensor(ids, device=device)[:, cached:]
    positions = positions[:, cached:]

    generators = []
    for job in jobs:
        generator = torch.Generator(device=device)
        # an unseeded request gets a fresh seed without reseeding the process's own generator
        generator.manual_seed(job.seed if job.seed is not None else secrets.randbits(63))
        generators.append(generator)
    temperature = torch.tensor([j.temperature for j in jobs], device=device)
    top_p = torch.tensor([j.top_p for j in jobs], device=device)
    z = torch.cat([j.latent for j in jobs]).to(device) if film is not None else None  # (B, Z)
    streamer = RowStreamer(jobs, tokenizer, set(stop_token_ids(model, tokenizer)))
    live = list(range(len(jobs)))  # the jobs whose rows are still in the batch, in row order
    for _ in range(max(j.max_tokens for j in jobs)):
        with film.conditioned(z) if film is not None else nullcontext():
            out = model(input_ids=inputs, attention_mask=mask, position_ids=positions, cache=cache,
                        use_cache=True, logits_to_keep=1)  # fmt: skip
        cache = out.cache
        uniform = torch.cat([torch.rand(1, generator=generators[i], device=device) for i in live])
        tokens = draw_tokens(out.logits[:, -1], temperature, top_p, uniform)
        streamer.put(live, tokens.tolist())
        going = [jobs[i].finish_reason is None and not jobs[i].cancelled.is_set() for i in live]
        running = [k for k, on in enumerate(going) if on]
        if not running:
            break
        if len(running) < len(live):  # finished rows leave the batch
            keep = torch.tensor(running, device=device)
            cache.batch_select_indices(keep)
            mask, positions, tokens = mask[keep], positions[keep], tokens[keep]
            temperature, top_p = temperature[keep], top_p[keep]
            z = z[keep] if z is not None else None
            live = [live[k] for k in running]
        inputs = tokens[:, None]
        positions = positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=-1)
    streamer.end()


class BatchEngine:
    """A bounded queue of jobs and the worker thread that runs them in batches of up to
    `max_batch` (waiting `batch_wait` seconds after the first job for others to join, unless the
    previous batch was a single job: a client sending one request at a time does not pay it).
    `submit` raises queue.Full when `max_queue` jobs already wait. `prefix_cache` keeps shared
    prompt prefixes' keys and values (`PrefixCache`); it is off for NP-DPO (`film`)."""

    def __init__(
        self,
        model,
        tokenizer,
        film=None,
        max_batch: int = 32,
        max_queue: int = 256,
        batch_wait: float = 0.02,
        prefix_cache: bool = True,
    ):
        self.model, self.tokenizer, self.film = model, tokenizer, film
        self.prefixes = PrefixCache(model, tokenizer) if prefix_cache and film is None else None
        self.max_batch, self.batch_wait = max_batch, batch_wait
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.lock = threading.Lock()  # one generate at a time on the model
        self.queueing = threading.Lock()  # a request's jobs enter the queue together
        self.largest_batch = 0  # the most jobs one generate call has run (observability, tests)
        self.finish_reasons: Counter[str] = Counter()  # stop / length / cancelled, so far
        self.worker = threading.Thread(target=self._work, daemon=True, name="steerable-batch")
        self.worker.start()

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of `jobs` or none (a request with n > 1 is not half-queued)."""
        with self.queueing:
            if self.jobs.maxsize and self.jobs.qsize() + len(jobs) > self.jobs.maxsize:
                raise queue.Full
            for job in jobs:
                self.jobs.put_nowait(job)

    def _work(self) -> None:
        last = None  # jobs in the previous batch
        while True:
            batch = [self.jobs.get()]
            # requests that arrive together (a burst of clients) start together: while others
            # are about, wait up to `batch_wait` seconds for more before starting a batch; a lone
            # client (the previous batch was one job too) does not pay the wait on every request
            deadline = time.monotonic() + (0 if last == 1 and self.jobs.empty() else self.batch_wait)
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    break
                batch.append(job)
            live = [j for j in batch if not j.cancelled.is_set()]  # a client that left is skipped
            last = len(batch)
            try:
                if live:
                    self.largest_batch = max(self.largest_batch, len(live))
                    with self.lock:
                        run_batch(self.model, self.tokenizer, live, self.film, self.prefixes)
            except Exception as err:  # a failed batch fails its requests, not the server
                for job in live:
                    job.error = err
            for job in batch:
                job.finish_reason = job.finish_reason or "cancelled"
                self.finish_reasons[job.finish_reason] += 1
                job.done.set()
                if job.on_done is not None:
                    job.on_done()
