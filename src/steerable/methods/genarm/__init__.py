"""GenARM (Xu et al., ICLR 2025): one autoregressive reward model per objective, mixed with the
base model at decode time, log pi_base + sum_k alpha_k log pi_ARM_k."""

from steerable.methods.base import Method

METHOD = Method(
    name="genarm",
    title="GenARM",
    summary="GenARM: one autoregressive reward model (LoRA, reference-free DPO on a pool of answers) per "
    "objective, added to the base model's next-token scores with the request's weights",
    steering=("weights",),
    examples=(
        "steerable train genarm --stats runs/ric-smoke --pool runs/ric-smoke/stages/offline/scored.jsonl --output_dir runs/genarm",  # noqa: E501 -- one command as typed
    ),
    policy="steerable.experts.steering",
    mixture="steerable.experts.mixture:genarm_mixture",
    config="steerable.methods.genarm.recipe:GenARMConfig",
    recipe="steerable.methods.genarm.recipe:train_genarm",
    compare="steerable.methods.genarm.compare:compare",
    uses_scored=True,
    forwards=(1, 1),
    check="steerable.methods.base:needs_policies",
    sweep="steerable.experts.steering:sweep",
    rungs="steerable.rungs:policy_rungs",
    budgets=("rl_steps",),
)
