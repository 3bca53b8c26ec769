"""Rewards-in-Context for text-to-image diffusion: a caption-only base model, a fine-tune on
captions carrying the images' normalised rewards as tags, and a preference mapped to target
tags at inference, sampled with classifier-free guidance."""

from steerable.methods.base import Method

METHOD = Method(
    name="ric-image",
    title="RiC (images)",
    summary="Rewards-in-Context for text-to-image diffusion: reward-tagged captions + guidance",
    steering=("weights", "mapping", "targets"),
    examples=(
        "steerable train ric-image --output_dir runs/ric-image",
        "steerable train ric-image --output_dir runs/ric-image-3 --objectives recognizability=builtin:recognizability compressibility=builtin:jpeg_compressibility brightness=builtin:brightness",  # noqa: E501 -- one command as typed
    ),
    check="steerable.methods.ric_image.policy:check_manifest",
    images="steerable.methods.ric_image.policy:ImagePolicy",
    config="steerable.methods.ric_image.recipe:RiCImageConfig",
    recipe="steerable.methods.ric_image.recipe:train_ric_image",
    sweep="steerable.methods.ric_image.sweep:image_sweep",
    evaluate_options=("mapping", "guidance", "sampling_steps"),
)
