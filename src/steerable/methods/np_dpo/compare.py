"""NP-DPO inside a comparison: by default on the scored data of a method before it (RiC's
offline data) and the comparison's statistics. Without a context_init, an NP-BTL run (np_rm:)
on the same pairs, split the same way, is trained first and starts its context encoder. In a
budget ladder its policy is saved at the budgets' rl_steps (DPO steps) too (`ladder_rungs`)."""

from steerable.configs import config_from_dict
from steerable.errors import SteerableError
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.np_dpo.recipe import NPDPOConfig

    given = inputs.config.np_dpo
    fixed = {
        "model": inputs.config.model,
        "data": inputs.scored(
            given.get("data"),
            "np-dpo needs data: set np_dpo: {data: TABLE} (a `steerable score` output), or add ric "
            "to the methods to use its scored offline data",
        ),
        "stats": given.get("stats") or inputs.stats,
        "output_dir": str(inputs.folder("np_dpo")),
        "trust_remote_code": inputs.config.trust_remote_code,
        **({"rungs": inputs.config.budgets["rl_steps"]} if "rl_steps" in inputs.config.budgets else {}),
    }
    section, steps, rm = {**given, **fixed}, [], None
    if section.get("context_init") is None:
        from steerable.methods.np_rm import NPRMConfig

        # the same pairs, split the same way (data and seed), so no pair it trained on is held out
        shared = {
            k: section[k] for k in ("types", "conflicting", "encoder", "objectives", "seed") if k in section
        }
        values = {
            **inputs.config.np_rm,
            **shared,
            "task": "scored",
            "data": fixed["data"],
            "output_dir": str(inputs.folder("np_rm")),
        }
        rm = config_from_dict(NPRMConfig, values, "np_rm")
        steps.append(Step("np_rm", rm, "steerable.evaluation.fewshot:run_np_rm"))
        section["context_init"] = rm.output_dir
    config = config_from_dict(NPDPOConfig, section, "np_dpo")
    if rm is not None and rm.seed != config.seed:
        raise SteerableError(
            f"np_rm: seed {rm.seed} but np_dpo's is {config.seed}; the NP-BTL that starts "
            "NP-DPO must split the pairs as NP-DPO does: set seed in np_dpo only (np_rm takes it from there)"
        )
    steps.append(Step("np_dpo", config, "steerable.evaluation.fewshot:run_np_dpo"))
    return Comparing(steps=tuple(steps))


def ladder_rungs(method: str, directory, out) -> list:
    """NP-DPO's rungs in a budget ladder: its policy's saves on the way (adapter and context
    encoder, stages/policy/rungs/step-N), each written as a model directory
    (`rungs.policy_rungs`) whose context encoder is that save's and whose held-out pairs (the
    simulated users' choices) are the finished model's; then the finished model. Every rung also
    pays the seconds of the NP-BTL its context encoder started from (context_init's np stage; 0
    for a run without one, or one recorded before its seconds were). The tokens a save trained
    on are estimated as the run's, in proportion to its steps."""
    import json
    import os
    from dataclasses import replace
    from pathlib import Path

    from steerable.fewshot.policy import FEWSHOT_DIR
    from steerable.manifest import write_manifest
    from steerable.policy import load_manifest
    from steerable.rungs import Spent, paying, policy_rungs

    context_init = load_manifest(directory).training.get("config", {}).get("context_init")
    done = None if context_init is None else Path(context_init) / "stages" / "np" / "done.json"
    started_from = 0.0
    if done is not None and done.is_file():
        started_from = float(json.loads(done.read_text())["info"].get("seconds", 0.0))
    rungs = paying(policy_rungs(method, directory, out), Spent(started_from))
    for rung in rungs[:-1]:  # the last is the finished model, as it is
        target = Path(rung.model)
        manifest = load_manifest(target)
        save = target / manifest.policies[0]["adapter"]
        fewshot = {
            **manifest.fewshot,
            "context": os.path.relpath(save / FEWSHOT_DIR, target),
            "heldout_pairs": os.path.relpath(Path(directory) / manifest.fewshot["heldout_pairs"], target),
        }
        write_manifest(target, replace(manifest, fewshot=fewshot))
    return rungs
