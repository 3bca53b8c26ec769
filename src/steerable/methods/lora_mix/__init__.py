"""LoRA output mixing: the experts of a Rewarded Soups directory all active, each LoRA layer
adding sum_k w_k B_k A_k x with the request's own weights (one forward a token). Not Rewarded
Soups, which averages the adapters' weights."""

from steerable.methods.base import Method

METHOD = Method(
    name="lora-mix",
    title="LoRA output mixing",
    summary="LoRA output mixing: a soups directory's adapters' outputs weighted per request (one forward)",
    steering=("weights",),
    examples=("steerable evaluate --method lora-mix --model runs/soups --out runs/eval/lora-mix",),
    policy="steerable.experts.steering",
    reads=("soups",),
    mixture="steerable.experts.mixture:OutputMixture",
    check="steerable.methods.base:needs_policies",
    sweep="steerable.experts.steering:sweep",
    compare="steerable.methods.lora_mix.compare:compare",
)
