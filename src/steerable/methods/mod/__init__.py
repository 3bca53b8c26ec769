"""MOD (Shi et al. 2024): the experts of a Rewarded Soups directory mixed at decode time, next
token scored by sum_k w_k log pi_k (or the alpha-divergence power mean): K forwards a token,
each expert merged into its own copy of the layers it adapts (`experts.mixture.LogitMixture`)."""

from steerable.methods.base import Method

METHOD = Method(
    name="mod",
    title="MOD",
    summary="MOD: a soups directory's experts mixed per token, sum_k w_k log pi_k (K forwards a token)",
    steering=("weights", "divergence"),
    examples=("steerable evaluate --method mod --model runs/soups --out runs/eval/mod",),
    policy="steerable.experts.steering",
    reads=("soups",),
    mixture="steerable.experts.mixture:mod_mixture",
    forwards=(1, 0),
    check="steerable.methods.base:needs_policies",
    sweep="steerable.experts.steering:sweep",
    compare="steerable.methods.mod.compare:compare",
    evaluate_options=("divergence",),
)
