"""MOSLIM: one multi-head classification reward model, intensity tags, and RL or DPO on an
off-the-shelf policy."""

from steerable.methods.base import Method

METHOD = Method(
    name="moslim",
    title="MOSLIM",
    summary="MOSLIM: GRPO (or DPO on a pool of answers) on an off-the-shelf policy with intensity tags "
    "and a multi-head RM's mapped reward",
    steering=("weights", "mapping", "levels"),
    examples=(
        "steerable train moslim --stats runs/ric-smoke --reward_model runs/moslim-rm --output_dir runs/moslim",  # noqa: E501 -- one command as typed
    ),
    in_prompt=True,
    policy="steerable.methods.moslim.steering",
    config="steerable.methods.moslim.recipe:MOSLIMConfig",
    recipe="steerable.methods.moslim.recipe:train_moslim",
    compare="steerable.methods.moslim.compare:compare",
    uses_scored=True,
    check="steerable.methods.moslim.steering:check_manifest",
    sweep="steerable.methods.tagged:trained_sweep",
    evaluate_options=("adapter", "mapping"),
    rungs="steerable.methods.moslim.compare:ladder_rungs",
    budgets=("rl_steps",),
)
