"""Decoding many rows together, each with its own settings: the loop the server's engine
(`serving.engine.BatchEngine`) runs across requests, and the one `evaluate` and `generate`
decode mixtures of experts with (`experts.steering.decode`).

The decode loop is ours, not `model.generate`, because `generate` runs a batch until its
longest row is done and takes no newcomers, while most answers end well before their
max_tokens. Here a finished row leaves at once (its keys and values
dropped with the cache's own `batch_select_indices`), its request is answered that step, and
a waiting request takes its place (`Rows.join`). The model's forward, its KV cache and its
attention masks are transformers' own. benchmarks/RESULTS.md (Throughput) compares this loop
with batched `generate` and with transformers' continuous batching.

Each row keeps its own settings inside the shared batch:
    sampling   `draw_tokens` draws row i's next token from its own temperature / top-k / top-p
               distribution with its own `torch.Generator` (seeded by the request), so what else
               shares the batch does not change its draws; temperature 0 is argmax
    stopping   a row ends at its own max_tokens, at a stop string, at the end of its turn, or
               when its client has gone (a client that disconnects frees its rows at the next step)
    streaming  `RowStreamer` hands each row its new text as it comes
    condition  what the model is conditioned on besides the prompt (what the method's
               `Steering.request` returned: NP-DPO's z, a mixture's row weights), its own per row;
               the method's `conditioner` is given the rows' conditions, in order, around every
               forward pass
    prefix     `PrefixCache` keeps the keys and values of prompt prefixes that requests share
               (the chat template's system turn); a batch whose rows all start with one skips
               its prefill, solo and batched requests alike (not for a conditioned model: its
               condition changes every layer's keys and values, as NP-DPO's FiLM does)
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicLayer

from steerable.generation import cut_to_top_p, stop_token_ids

# A method's conditioner (`Steering.conditioner`): the rows' conditions, in row order -> a
# context in which the model's forward pass is conditioned on them
Conditioner = Callable[[Sequence[object]], AbstractContextManager]


@dataclass
class Job:
    """One completion to generate: the rendered prompt, its sampling, and where its text goes."""

    text: str
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_k: int = 0  # sample among the k most likely tokens only (0: the whole vocabulary)
    condition: object = None  # what `Steering.request` conditions the model on (NP-DPO's z); None: nothing
    on_text: Callable[[str], None] | None = None  # each new piece of text, from the worker thread
    on_done: Callable[[], None] | None = None  # called (from the worker thread) once it is done
    # filled in by the engine
    output: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: list[int] = field(default_factory=list)  # the completion's token ids so far
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def draw_tokens(
    scores: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    uniform: torch.Tensor,
    top_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each row's next token (B,) by inverse-CDF sampling with its own `uniform` number in [0, 1)
    from its temperature-scaled distribution, cut to its `top_k` most likely tokens (0: all)
    and to its top-p nucleus (a token is kept while the mass before it is < top_p, as in
    `generation.TopKSampler`); temperature 0 is argmax.

    No full sort of the vocabulary: a nucleus is looked for among the 64 most likely tokens,
    then 4x as many, until every row's is found (on a CPU, a full sort of a batch's scores
    over the whole vocabulary costs more than the decode step itself)."""
    greedy = temperature <= 0
    scores = scores.float()
    if top_k is not None and bool((top_k > 0).any()):
        scores = _cut_to_top_k(scores, top_k)
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


def _cut_to_top_k(scores: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """`scores` with every token below its row's k-th best at -inf (rows with top_k 0 as they are)."""
    k = torch.where(top_k > 0, top_k, scores.shape[-1]).clamp(max=scores.shape[-1])
    best = torch.topk(scores, int(k.max()), dim=-1).values
    kth = best.gather(-1, (k - 1)[:, None])
    return scores.masked_fill(scores < kth, float("-inf"))


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
    """Each step's tokens -> each job's new text (decoded from all its tokens so far, so
    multi-byte characters come out whole), with the job's stop strings applied; sets a job's
    `finish_reason` when it ends.

    While a row runs, the last `max(len(stop)) - 1` characters are held back: they may be the
    start of a stop string that the next tokens complete, and text once handed on cannot be
    taken back (vLLM's detokenizer holds back the same). The row's end hands on the rest."""

    def __init__(self, tokenizer, stops: set[int]):
        self.tokenizer, self.stops = tokenizer, stops

    def put(self, jobs: list[Job], tokens: list[int]) -> None:
        """`jobs[i]` drew `tokens[i]`."""
        for job, token in zip(jobs, tokens, strict=True):
            if token in self.stops:
                job.finish_reason = "stop"
                continue
            job.tokens.append(token)
            job.completion_tokens = len(job.tokens)
            text, stopped = cut_at_stop(self.tokenizer.decode(job.tokens, skip_special_tokens=True), job.stop)
            if stopped:  # checked first: a stop the last allowed token completes is a stop
                job.finish_reason = "stop"
                self.emit(job, text)
            elif job.completion_tokens >= job.max_tokens:
                job.finish_reason = "length"  # end() emits what is left
            elif not text.endswith("\ufffd"):  # else half a character: wait for the rest
                held = max((len(s) for s in job.stop), default=1) - 1
                self.emit(job, text[: max(0, len(text) - held)])

    def emit(self, job: Job, text: str) -> None:
        """Hand on the part of `text` not yet emitted."""
        if text.startswith(job.output) and len(text) > len(job.output):
            new, job.output = text[len(job.output) :], text
            if job.on_text is not None:
                job.on_text(new)

    def end(self, job: Job) -> None:
        """The job's row has left: its finish reason and the text not yet emitted."""
        if job.finish_reason is None and job.cancelled.is_set():
            job.finish_reason = "cancelled"  # its client went away; the row stopped early
        if job.finish_reason is None:
            job.finish_reason = "length" if job.completion_tokens >= job.max_tokens else "stop"
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True).rstrip("\ufffd")
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


class Rows:
    """The rows being decoded together and everything each one carries: its job, its generator,
    temperature, top-p, top-k and z, its attention mask and position, and the shared KV cache.

    `conditioned`: the model's conditioner (None: it reads its steering from the prompt alone),
    entered around each forward pass with the rows' `conditions`.

    `Rows.prefill(...)` lays new jobs out as [shared prefix | padding | the rest of the prompt]
    (every prompt ends at the same position; positions follow the mask, so the padding is
    skipped) and passes a cached prefix's keys and values in; its first `step()` prefills the
    rest and draws each row's first token. `step()` runs one forward pass for the rows still
    going and draws their next tokens; a row that ends leaves at once (`batch_select_indices` on
    the cache). `join(other)` takes in rows prefilled meanwhile, so requests that arrive while a
    batch runs start at the next step: the shorter of the two caches is padded on the left
    (masked) to the other's length."""

    def __init__(self, model, streamer: RowStreamer, conditioned: Conditioner | None = None):
        self.model, self.streamer, self.conditioned = model, streamer, conditioned
        self.jobs: list[Job] = []
        self.generators: list[torch.Generator] = []
        self.conditions: list[object] = []

    def __len__(self) -> int:
        return len(self.jobs)

    @classmethod
    @torch.inference_mode()
    def prefill(
        cls, model, tokenizer, jobs, streamer, conditioned=None, prefixes: PrefixCache | None = None
    ) -> Rows:
        if conditioned is None and any(j.condition is not None for j in jobs):
            # never silently dropped: the answer would be the unconditioned model's
            raise ValueError("a job carries a condition but the model has no conditioner to apply it")
        rows = cls(model, streamer, conditioned)
        ids = tokenizer([j.text for j in jobs], add_special_tokens=False)["input_ids"]
        for job, row in zip(jobs, ids, strict=True):
            job.prompt_tokens = len(row)
        cached, cache = 0, None
        if prefixes is not None:
            if len({tuple(r) for r in ids}) > 1:
                prefixes.keep(ids)
            cached, cache = prefixes.lookup(ids)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        width = max(len(r) for r in ids) - cached
        padded = [r[:cached] + [pad] * (width - len(r) + cached) + r[cached:] for r in ids]
        mask = [[1] * cached + [0] * (width - len(r) + cached) + [1] * (len(r) - cached) for r in ids]
        device = model.device
        rows.mask = torch.tensor(mask, device=device)
        rows.positions = (rows.mask.cumsum(-1) - 1).clamp(min=0)[:, cached:]
        rows.inputs = torch.tensor(padded, device=device)[:, cached:]
        rows.cache = cache
        rows.jobs = list(jobs)
        for job in jobs:
            generator = torch.Generator(device=device)
            # an unseeded request gets a fresh seed without reseeding the process's own generator
            generator.manual_seed(job.seed if job.seed is not None else secrets.randbits(63))
            rows.generators.append(generator)
        rows.temperature = torch.tensor([j.temperature for j in jobs], device=device)
        rows.top_p = torch.tensor([j.top_p for j in jobs], device=device)
        rows.top_k = torch.tensor([j.top_k for j in jobs], device=device)
        rows.conditions = [j.condition for j in jobs]
        return rows

    @torch.inference_mode()
    def step(self) -> list[Job]:
        """One forward pass and draw for every row; returns the jobs that ended (they have left)."""
        with self.conditioned(self.conditions) if self.conditioned is not None else nullcontext():
            out = self.model(input_ids=self.inputs, attention_mask=self.mask, position_ids=self.positions,
                             cache=self.cache, use_cache=True, logits_to_keep=1)  # fmt: skip
        self.cache = out.cache
        uniform = torch.cat([torch.rand(1, generator=g, device=self.mask.device) for g in self.generators])
        tokens = draw_tokens(out.logits[:, -1], self.temperature, self.top_p, uniform, self.top_k)
        self.streamer.put(self.jobs, tokens.tolist())
        going = [j.finish_reason is None and not j.cancelled.is_set() for j in self.jobs]
        ended = [j for j, on in zip(self.jobs, going, strict=True) if not on]
        if ended:
            keep = [k for k, on in enumerate(going) if on]
            index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
            if keep:
                self.cache.batch_select_indices(index)
            self.mask, self.positions, tokens = self.mask[index], self.positions[index], tokens[index]
            self.temperature, self.top_p, self.top_k = (
                self.temperature[index],
                self.top_p[index],
                self.top_k[index],
            )
            self.conditions = [self.conditions[k] for k in keep]
            self.jobs = [self.jobs[k] for k in keep]
            self.generators = [self.generators[k] for k in keep]
            for job in ended:
                self.streamer.end(job)
            self._trim()
        self.inputs = tokens[:, None]
        self.positions = self.positions[:, -1:] + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.jobs), 1)], dim=-1)
        return ended

    def _trim(self) -> None:
        """Drop the leading columns no row attends to (the padding of rows that have left), so a
        batch that keeps taking newcomers does not carry an ever wider cache."""
        attended = self.mask.any(dim=0).nonzero()
        first = int(attended[0]) if len(attended) else 0
        if first == 0 or not self.joinable():
            return
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def joinable(self) -> bool:
        """Whether other rows can be merged in: every layer of the cache a plain dynamic one."""
        return all(type(layer) is DynamicLayer for layer in self.cache.layers)

    def join(self, other: Rows) -> None:
        if not other.jobs:
            return
        if not self.jobs:
            self.__dict__.update(other.__dict__)
            return
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width - 1, 2), _left_pad(theirs.keys, width - 1, 2)])
            mine.values = torch.cat(
                [_left_pad(mine.values, width - 1, 2), _left_pad(theirs.values, width - 1, 2)]
            )
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(other.mask, width, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.inputs = torch.cat([self.inputs, other.inputs])
        self.temperature = torch.cat([self.temperature, other.temperature])
        self.top_p = torch.cat([self.top_p, other.top_p])
        self.top_k = torch.cat([self.top_k, other.top_k])
        self.conditions += other.conditions
        self.jobs += other.jobs
        self.generators += other.generators


@torch.inference_mode()
def cache_joinable(model) -> bool:
    """Whether `model`'s KV cache is made of plain dynamic layers (which `Rows.join` can merge),
    from one forward pass of one token."""
    ids = torch.zeros((1, 1), dtype=torch.long, device=model.device)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    return all(type(layer) is DynamicLayer for layer in out.cache.layers)


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`tensor` padded with zeros at the start of `dim` to `length` (a 0 in a mask: not attended)."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def run_batch(
    model,
    tokenizer,
    jobs: list[Job],
    conditioned: Conditioner | None = None,
    prefixes: PrefixCache | None = None,
    stops: set[int] | None = None,
) -> None:
    """Decode `jobs` together to the end (no newcomers): what the engine's worker does, in one
    call. `stops`: the tokens that end a row (default: the model's end of turn and eos; an empty
    set runs every row to its max_tokens)."""
    stops = set(stop_token_ids(model, tokenizer)) if stops is None else stops
    streamer = RowStreamer(tokenizer, stops)
    rows = Rows.prefill(model, tokenizer, jobs, streamer, conditioned, prefixes)
    while rows.jobs:
        rows.step()
