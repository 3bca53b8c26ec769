"""What `evaluate` sweeps for a RiC image model: images at each preference's targets, and the
caption-only base model's images, the point RiC is compared against."""

from __future__ import annotations

from steerable.errors import SteerableError
from steerable.methods.base import Generator


def image_sweep(
    model: str,
    sampling,
    mapping: str | None = None,
    trust_remote_code: bool = False,
    guidance: float | None = None,
    steps: int | None = None,
    **_,
) -> Generator:
    """A ric-image directory swept over weights (`mapping` overrides the stored mapping; the
    guidance scale and DDIM steps default to the model's, and are checked before anything
    loads; the base model shares the tagged one's frozen parts). Each point's images use the
    same seed, so points differ by their tags alone."""
    from steerable.methods.ric_image.pipeline import check_guidance
    from steerable.methods.ric_image.policy import ImagePolicy

    if guidance is not None:
        check_guidance(guidance)
    if steps is not None and steps < 1:
        raise SteerableError(f"--sampling-steps must be >= 1 (denoising steps per image), got {steps}")

    policy = ImagePolicy.from_pretrained(model, trust_remote_code=trust_remote_code)
    seed = getattr(sampling, "seed", 0) or 0
    batch = getattr(sampling, "batch_size", 64) or 64

    def generate(prompts, weights):
        return policy.generate(prompts, preference=list(weights), mapping=mapping, guidance=guidance,
                               steps=steps, seed=seed, batch_size=batch)  # fmt: skip

    def requested(weights):
        targets = policy.steering_for(preference=list(weights), mapping=mapping)
        return [targets[name] for name in policy.names]

    base = ImagePolicy.from_pretrained(
        model, base=True, trust_remote_code=trust_remote_code, parts=policy.parts
    )  # its own UNet, the tagged model's frozen parts

    def baseline(prompts):
        return base.generate(prompts, guidance=guidance, steps=steps, seed=seed, batch_size=batch)

    return Generator(
        generate, policy.rewards, policy.parts.tokenizer, policy.manifest, "float32", None, requested,
        baseline=baseline,
    )  # fmt: skip
