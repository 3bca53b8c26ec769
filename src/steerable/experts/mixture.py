"""K single-objective experts (LoRA adapters on one base) mixed per row at decode time, in one
batched forward per step. Three ways of mixing:

    LogitMixture   the experts' next-token log-probabilities (MOD: sum_k w_k log pi_k, or its
                   alpha-divergence power mean; GenARM: log pi_base + sum_k alpha_k log pi_ARM_k):
                   K forwards a token, in one of two layouts. Merged (the default): each expert
                   merged into its own copy of the layers its adapter changes (the others, such
                   as the embeddings, shared), each copy with its own KV cache (`ExpertCaches`):
                   each forward runs at one merged model's speed, for K more copies of the
                   adapted layers beside the base the adapters sit on. Adapters: one base
                   holding the K adapters, every request replicated once per expert, K rows
                   next to each other, PEFT's mixed-batch forward (`adapter_names`) routing
                   each copy to its adapter in one pass, the copies sharing a `GroupedCache`:
                   the memory of one model, each forward an unmerged LoRA pass.
    OutputMixture  the adapters' outputs: every LoRA layer adds sum_k w_k B_k A_k x, with the
                   row's own w (one forward; K low-rank paths). For LoRA experts this is the
                   same function as the weight average below, at the exact (unrounded) weights:
                   every layer's delta is linear, so averaging the deltas and averaging their
                   outputs agree layer by layer. It differs in how it runs: nothing merged or
                   cached, no rounding, K low-rank products a layer instead of one.
    SoupMixture    the adapters' weights (Rewarded Soups): the adapter theta_0 + sum_k w_k dtheta_k
                   is merged once per rounded weight vector and kept in a small cache; each row is
                   routed to its merged adapter (one forward).

Each is a torch module with the call the serving engine's decode loop makes (input_ids,
attention_mask, position_ids, cache, use_cache, logits_to_keep) and returns one row of scores
per request; `weighted(rows)` sets every row's weights around a forward pass (the
`Steering.conditioner` hook the engine enters). Generation, in `evaluate` and in the server
alike, is the engine's own loop (`decoding.Rows`): per-row seeds, stops and temperature,
and rows that leave or join mid-batch.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from steerable.errors import SteerableError

BASE = "__base__"  # PEFT's name, in a mixed batch, for the bare base model


class RowWeights(NamedTuple):
    """What one request's row is mixed with: a weight per objective and, for MOD, the alpha of
    the alpha-divergence family (0: reverse KL)."""

    weights: tuple[float, ...]
    alpha: float = 0.0


class GroupedCache(DynamicCache):
    """A KV cache holding `group` rows per request, a request's rows next to each other (its
    expert k at row b * group + k): selecting requests (the engine dropping finished rows)
    selects their whole groups, and joining two caches end to end keeps the layout."""

    def __init__(self, group: int, **kwargs):
        super().__init__(**kwargs)
        self.group = group

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        offsets = torch.arange(self.group, device=indices.device)
        super().batch_select_indices((indices[:, None] * self.group + offsets).flatten())


class ExpertCaches:
    """The KV caches of K merged expert copies, one per copy, rows in request order in each:
    selecting requests selects them in every copy's cache, and `layers` lists every copy's
    layers (what the decode loop trims and joins, layer by layer)."""

    def __init__(self, parts: Sequence[DynamicCache]):
        self.parts = list(parts)

    @property
    def layers(self) -> list:
        return [layer for part in self.parts for layer in part.layers]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for part in self.parts:
            part.batch_select_indices(indices)

    def get_seq_length(self) -> int:
        return self.parts[0].get_seq_length()


def merged_copies(model, adapters: Sequence[str]) -> list[torch.nn.Module]:
    """For each adapter of the PeftModel `model`, a plain model with that adapter merged into
    its own copy of the layers LoRA wraps (`BASE`: the bare base); every other weight and buffer
    (embeddings, norms, output head, the layers no adapter touches) is shared with `model`, not
    copied."""
    import copy

    from peft.tuners.lora import LoraLayer

    wrapped = {id(m.base_layer.weight) for m in model.modules() if isinstance(m, LoraLayer)}
    shared = [*model.parameters(), *model.buffers()]
    copies = []
    for name in adapters:
        memo = {id(t): t for t in shared if name == BASE or id(t) not in wrapped}
        twin = copy.deepcopy(model, memo)
        twin = twin.unload() if name == BASE else twin.merge_and_unload(adapter_names=[name])
        copies.append(twin.eval())
    return copies


def mod_scores(logp: torch.Tensor, weights: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """MOD's next-token score from the experts' log-probabilities `logp` [B, K, ..., V], per row
    b with weights [B, K] and alpha [B]:
        alpha == 0 (reverse KL):  sum_k w_k log pi_k          (any sign of w, where sum_k w_k > 0)
        alpha > 0:               -(1/alpha) log sum_k w_k pi_k^(-alpha)   (w_k >= 0)
    the second tends to the first as alpha -> 0. An expert of weight 0 takes no part (not even
    where its log-probability is -inf)."""
    extra = (1,) * (logp.dim() - 2)
    w = weights.to(logp.dtype).view(*weights.shape, *extra)
    linear = weighted_sum(logp, weights)
    if not bool((alpha > 0).any()):  # the power mean costs passes over the vocabulary
        return linear
    a = alpha.to(logp.dtype).view(-1, *extra)
    safe = torch.where(a > 0, a, 1.0)
    terms = torch.where(w > 0, torch.log(w.clamp(min=1e-30)) - safe[:, None] * logp, -math.inf)
    power = -torch.logsumexp(terms, dim=1) / safe
    return torch.where(a > 0, power, linear)


def weighted_sum(logp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k logp[:, k] for `logp` [B, K, ..., V] and weights [B, K], a term of weight 0
    left out (even where its log-probability is -inf). Summed expert by expert: a reduction over
    the expert axis of the stacked tensor is several times slower on a CPU."""
    w = weights.to(logp.dtype).view(*weights.shape, *(1,) * (logp.dim() - 2))
    total = None
    for k in range(logp.shape[1]):
        term = w[:, k] * logp[:, k]
        if bool((w[:, k] == 0).any()):
            term = torch.where(w[:, k] == 0, 0.0, term)
        total = term if total is None else total.add_(term)
    return total


def genarm_temperature(alphas: torch.Tensor) -> torch.Tensor:
    """GenARM's sampling temperature per row, 1 / (1 + sum_k alpha_k) [B]: the mixture
    (log pi_base + sum_k alpha_k log pi_ARM_k) / (1 + sum_k alpha_k) sampled at it is
    pi_base * prod_k pi_ARM_k^alpha_k, the distribution GenARM decodes from."""
    return 1.0 / (1.0 + alphas.sum(dim=-1))


def mod_mixture(model, experts: Sequence[str], merge: bool = True) -> LogitMixture:
    """MOD over the experts."""
    return LogitMixture(model, experts, mod_scores, divergences=True, merge=merge)


def genarm_mixture(model, experts: Sequence[str], merge: bool = True) -> LogitMixture:
    """GenARM: the bare base and the autoregressive reward models; a row's weights are its alphas."""
    return LogitMixture(
        model, [BASE, *experts], lambda logp, weights, alpha: genarm_scores(logp, weights), merge=merge
    )


def genarm_scores(logp: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """GenARM's next-token score from `logp` [B, 1 + K, ..., V] (the base first, then the K
    autoregressive reward models) and alphas [B, K]: log pi_base + sum_k alpha_k log pi_ARM_k,
    which is the normalised mixture at `genarm_temperature`, so that a row's own temperature
    applies on top of it."""
    return weighted_sum(logp[:, 1:], alphas).add_(logp[:, 0])


class Mixture(torch.nn.Module):
    """What the three mixings share: the PeftModel holding the experts (`experts`: their
    adapter names, in objective order), each row's `RowWeights` while `weighted` is entered
    (without it, equal weights), and what the engine reads of a causal LM (device, config,
    generation_config). `mixes` names what is mixed (the server's model card shows it);
    `forwards` is the cost of a token, in forwards of the base model. Every mixture is made as
    `mix(peft_model, experts, merge=...)` (`Method.mix`); only `LogitMixture` runs its experts
    merged, output mixing and the soup cache work on the adapters themselves (their `merge` is
    accepted so that every mixture is made alike, and does nothing)."""

    mixes: str
    forwards: int = 1
    signed: bool = False  # whether negative weights are defined (MOD's reverse KL)
    divergences: bool = False  # whether a row may ask for an alpha-divergence (MOD)

    def __init__(self, model, experts: Sequence[str]):
        super().__init__()
        self.model, self.experts = model, list(experts)
        self.rows: list[RowWeights] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def config(self):
        return self.model.config

    @property
    def generation_config(self):
        return self.model.generation_config

    @contextlib.contextmanager
    def weighted(self, rows: Sequence[RowWeights]) -> Iterator[None]:
        """Every row of the next forward passes mixed with its own weights, in row order."""
        previous, self.rows = self.rows, [r if isinstance(r, RowWeights) else RowWeights(*r) for r in rows]
        try:
            yield
        finally:
            self.rows = previous

    def row_weights(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights [B, K], alpha [B]) of the rows of a forward of `batch` requests."""
        k = len(self.experts) - (1 if self.experts[0] == BASE else 0)
        rows = self.rows if self.rows is not None else [RowWeights((1 / k,) * k)] * batch
        if len(rows) != batch:
            raise ValueError(f"{len(rows)} rows of weights for a batch of {batch}")
        weights = torch.tensor([r.weights for r in rows], dtype=torch.float32, device=self.device)
        alpha = torch.tensor([r.alpha for r in rows], dtype=torch.float32, device=self.device)
        return weights, alpha


class LogitMixture(Mixture):
    """Log-probability mixing: `combine(logp [B, E, ..., V], weights [B, K], alpha [B]) ->
    scores [B, ..., V]` over the E = len(experts) adapters (GenARM's first is `BASE`);
    `divergences`: MOD's, whose rows may ask for an alpha-divergence and, at reverse KL, for
    negative weights. Its
    scores are log-probabilities up to a constant per row, so a row's temperature and top-p
    apply to them as to a model's logits."""

    mixes = "log-probabilities"

    def __init__(self, model, experts: Sequence[str], combine, divergences: bool = False, merge: bool = True):
        super().__init__(model, experts)
        self.combine = combine
        self.forwards = len(self.experts)
        self.signed = self.divergences = divergences
        self.copies = torch.nn.ModuleList(merged_copies(model, self.experts)) if merge else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        group, batch = len(self.experts), input_ids.shape[0]
        weights, alpha = self.row_weights(batch)
        if self.copies is not None:  # merged: one forward per expert copy, each its own cache
            parts = cache.parts if cache is not None else [None] * group
            outs = [
                copy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     cache=part, use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
                for copy, part in zip(self.copies, parts, strict=True)
            ]  # fmt: skip
            logits = torch.stack([out.logits for out in outs], dim=1)
            cache = ExpertCaches([out.cache for out in outs]) if use_cache else None
        else:  # adapters: K copies of every row in one mixed-batch forward

            def each(t):
                return None if t is None else t.repeat_interleave(group, dim=0)

            if cache is None and use_cache:
                cache = GroupedCache(group, config=self.model.config)
            out = self.model(
                input_ids=each(input_ids),
                attention_mask=each(attention_mask),
                position_ids=each(position_ids),
                cache=cache,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                adapter_names=self.experts * batch,
                **kwargs,
            )
            logits, cache = out.logits.unflatten(0, (batch, group)), out.cache if use_cache else None
        scores = self.combine(torch.log_softmax(logits.float(), dim=-1), weights, alpha)
        return CausalLMOutputWithPast(logits=scores, cache=cache)


class OutputMixture(Mixture):
    """Output mixing: every adapter active at once, each LoRA layer's adapter k's output scaled
    by its row's w_k, so the layer adds sum_k w_k B_k A_k x: Rewarded Soups' weight average
    computed without merging (`SoupMixture` merges it, at rounded weights)."""

    mixes = "outputs"

    def __init__(self, model, experts: Sequence[str], *, merge: bool = True):
        super().__init__(model, experts)
        from peft.tuners.lora import LoraLayer

        self.model.base_model.set_adapter(self.experts)
        self.scale: torch.Tensor | None = None  # [B, K] during a forward
        self.hooks = []
        for module in self.model.modules():
            if not isinstance(module, LoraLayer):
                continue
            missing = [name for name in self.experts if name not in module.lora_B]
            if missing:
                raise SteerableError(
                    f"output mixing scales each expert's LoRA matrices B; the layer "
                    f"{type(module).__name__} has none for expert(s) {missing} (embedding or "
                    "non-linear LoRA layers are not supported)"
                )
            for k, name in enumerate(self.experts):
                self.hooks.append(module.lora_B[name].register_forward_hook(self._scaled(k)))

    def _scaled(self, k: int):
        def hook(module, inputs, output):
            if self.scale is None:
                return output
            return output * self.scale[:, k].view(-1, *(1,) * (output.dim() - 1)).to(output.dtype)

        return hook

    def forward(self, input_ids: torch.Tensor, **kwargs) -> CausalLMOutputWithPast:
        self.scale, _ = self.row_weights(input_ids.shape[0])
        try:
            return self.model(input_ids=input_ids, **kwargs)
        finally:
            self.scale = None


class SoupMixture(Mixture):
    """Rewarded Soups per request: each row's weights rounded to `decimals`, the adapters
    averaged in weight space with them once (PEFT's `add_weighted_adapter`, combination "cat":
    exact for LoRA deltas) and kept, up to `size` merged adapters (least recently used first
    out, never one the running batch needs); each row routed to its own in the batch's forward.
    The weights must be non-negative (an average)."""

    mixes = "weights"

    def __init__(
        self, model, experts: Sequence[str], size: int = 16, decimals: int = 2, *, merge: bool = True
    ):
        super().__init__(model, experts)
        self.size, self.decimals = size, decimals
        self.merged: OrderedDict[tuple[float, ...], str] = OrderedDict()
        self.made = 0  # adapters merged so far (each a new name)

    def key(self, weights: Sequence[float]) -> tuple[float, ...]:
        """`weights` rounded to `decimals` (the cache's key; the merge divides it by its sum)."""
        return tuple(round(float(w), self.decimals) for w in weights)

    def adapter_for(self, weights: Sequence[float], keep: Sequence[tuple] = ()) -> str:
        """The merged adapter of `weights` (rounded), made now if it is not kept; adapters
        beyond `size` are dropped, least recently used first, except those of `keep`."""
        key = self.key(weights)
        if key in self.merged:
            self.merged.move_to_end(key)
            return self.merged[key]
        name = f"soup-{self.made}"
        self.made += 1
        total = sum(key)
        self.model.add_weighted_adapter(
            self.experts, [w / total for w in key], adapter_name=name, combination_type="cat"
        )
        self.model.eval()  # the new adapter's dropout layers are made in training mode
        self.merged[key] = name
        for old in [k for k in self.merged if k != key and k not in keep][
            : max(0, len(self.merged) - self.size)
        ]:
            self.model.delete_adapter(self.merged.pop(old))
        return name

    def forward(self, input_ids: torch.Tensor, **kwargs) -> CausalLMOutputWithPast:
        weights, _ = self.row_weights(input_ids.shape[0])
        keys = [self.key(row) for row in weights.tolist()]
        names = [self.adapter_for(row, keep=keys) for row in keys]
        return self.model(input_ids=input_ids, adapter_names=names, **kwargs)
