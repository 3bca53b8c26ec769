"""NP-DPO inside a comparison: by default on the scored data of a method before it (RiC's
offline data) and the comparison's statistics. Without a context_init, an NP-BTL run (np_rm:)
on the same pairs, split the same way, is trained first and starts its context encoder."""

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
