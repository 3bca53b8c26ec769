"""NP-DPO: a policy steered by a few of a user's own choices (a context encoder and FiLM layers)."""

from steerable.methods.base import Method

METHOD = Method(
    name="np-dpo",
    title="NP-DPO",
    summary="Few-shot NP-DPO policy: FiLM-conditioned LoRA trained with DPO on tasks, steered by a "
    "user's examples; prints its evaluation",
    steering=("examples",),
    examples=(
        "steerable train np-dpo --data runs/ric-smoke/stages/offline/scored.jsonl --context_init runs/np-rm "
        "--output_dir runs/np-dpo",
    ),
    policy="steerable.methods.np_dpo.steering",
    config="steerable.methods.np_dpo.recipe:NPDPOConfig",
    # `train np-dpo` trains, then evaluates (implicit-reward accuracy and generation effects)
    recipe="steerable.evaluation.fewshot:run_np_dpo",
    compare="steerable.methods.np_dpo.compare:compare",
    rungs="steerable.methods.np_dpo.compare:ladder_rungs",
    budgets=("rl_steps",),
    uses_scored=True,
    report=("steerable.evaluation.fewshot:np_dpo_result", "steerable.evaluation.fewshot:effects_table"),
    check="steerable.methods.np_dpo.steering:check_manifest",
    sweep="steerable.methods.np_dpo.steering:sweep",
)
