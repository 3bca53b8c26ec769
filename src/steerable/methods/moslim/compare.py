"""MOSLIM inside a comparison: the rl: section with the moslim: one over it. Without a
reward_model, the multi-head RM is trained first (moslim_rm:), by default on the scored data of
a method before it (RiC's offline data); under algorithm dpo without a pool, that data is the
pool it ranks."""

from steerable.configs import config_from_dict
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.moslim.recipe import MOSLIMConfig

    steps = []
    section = {**inputs.rl(), **inputs.config.moslim, "output_dir": str(inputs.folder("moslim"))}
    if section.get("reward", "mapped") == "mapped" and section.get("reward_model") is None:
        from steerable.reward_models.multihead import MOSLIMRMConfig

        given = inputs.config.moslim_rm
        data = inputs.scored(
            given.get("data"),
            "moslim needs a reward model: set moslim: {reward_model: DIR}, or moslim_rm: {data: "
            "TABLE} to train one (with ric in the methods it trains on RiC's scored offline data)",
        )
        fixed = {
            "data": data,
            "output_dir": str(inputs.folder("moslim_rm")),
            "trust_remote_code": inputs.config.trust_remote_code,
        }
        rm = config_from_dict(MOSLIMRMConfig, {**given, **fixed}, "moslim_rm")
        steps.append(Step("moslim_rm", rm, "steerable.reward_models.multihead:train_moslim_rm"))
        section["reward_model"] = rm.output_dir
    if section.get("algorithm") == "dpo":
        section.pop("prompts", None)  # DPO trains on the pool's prompts
        section["pool"] = inputs.scored(
            section.get("pool"),
            "moslim's dpo ranks a pool of answers: set moslim: {pool: TABLE} (prompt/response rows, "
            "several per prompt), or put ric in the methods to rank RiC's scored offline data",
        )
    config = config_from_dict(MOSLIMConfig, section, "rl/moslim")
    steps.append(Step("moslim", config, "steerable.methods.moslim.recipe:train_moslim"))
    return Comparing(steps=tuple(steps), uncounted="GRPO sampling")


def ladder_rungs(method: str, directory, out) -> list:
    """MOSLIM's rungs in a budget ladder (`evaluation.ladder.stage_rungs`: its policy's saves
    on the way, then the finished policy), each also paying the training seconds of the
    multi-head reward model its policy was trained against (its moslim_rm.json's record: the
    reward model is part of what MOSLIM costs; its FLOPs are not estimated, its tokens are not
    recorded)."""
    import json
    from pathlib import Path

    from steerable.policy import load_manifest
    from steerable.reward_models.multihead import MANIFEST
    from steerable.rungs import Spent, paying, stage_rungs

    reward_model = load_manifest(directory).moslim.get("reward_model")
    record = None if reward_model is None else Path(reward_model) / MANIFEST  # none: z-score rewards
    trained = json.loads(record.read_text()).get("training", {}) if record and record.is_file() else {}
    seconds = float(trained.get("seconds", 0.0))
    return paying(stage_rungs(method, directory, out), Spent(seconds))
