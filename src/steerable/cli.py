"""The `steerable` command line. Every subcommand has --help; user errors print one line."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from steerable import methods
from steerable.errors import SteerableError
from steerable.generation import SamplingConfig
from steerable.serving.local import LIMIT_CONCURRENCY, READ_TIMEOUT, TIMEOUT_KEEP_ALIVE

console = Console(stderr=True)


def train_examples(method) -> tuple[str, ...]:
    """The examples ending `steerable train NAME --help`: the method record's, else its --help
    (which lists every option), so a new method needs no entry here."""
    return method.examples or (f"steerable train {method.name} --help",)


# Runnable examples that end each command's --help, keyed by the command as typed after
# `steerable`. From a fresh clone they run in order: the smoke run first, then what uses it.
SCORED = "runs/ric-smoke/stages/offline/scored.jsonl"
EXAMPLES = {
    "": ("steerable demo --preset smoke", "steerable train ric --preset smoke"),
    "objectives": ("steerable objectives",),
    "prepare": ("steerable prepare --model smollm2",),
    "sample": ("steerable sample --limit 8 --n-per-prompt 2 --out answers.jsonl",),
    "score": (
        "steerable score answers.jsonl --out scored.jsonl",
        "steerable score answers.jsonl --out scored.jsonl -o brief=builtin:brevity",
    ),
    "train": (
        "steerable train ric --preset smoke",
        "steerable train ric --data scored.jsonl --output_dir runs/mine",
    ),
    "train rm": (f"steerable train rm --data {SCORED} --objective brief --output_dir runs/rm-brief",),
    "train moslim-rm": (
        f"steerable train moslim-rm --data {SCORED} --labels brief positive --output_dir runs/moslim-rm",
    ),
    "train np-rm": (
        "steerable train np-rm --task synthetic --output_dir runs/np-rm-synthetic",
        f"steerable train np-rm --task scored --data {SCORED} --output_dir runs/np-rm",
    ),
    "generate": (
        'steerable generate "How do tides work?" --model runs/ric-smoke \\\n    --prefer brief=0.8,positive=0.2',
        'steerable generate "a handwritten digit seven" --model runs/ric-image \\\n'
        "    --prefer recognizability=0.8,compressibility=0.2 --out runs/seven",
    ),
    "evaluate": (
        "steerable evaluate --method ric --model runs/ric-smoke --limit 8 \\\n"
        "    --resolution 4 --out runs/eval-ric",
        "steerable evaluate --method prompting --model smollm2 --stats runs/ric-smoke \\\n"
        "    --limit 8 --resolution 4 --out runs/eval-p",
    ),
    "report": ("steerable report runs/eval-ric runs/eval-p --out runs/eval-both",),
    "compare": ("steerable compare --methods ric,prompting --out runs/compare",),
    "demo": ("steerable demo --preset smoke", "steerable demo --out runs/demo"),
    "serve": ("steerable serve runs/ric-smoke", "steerable serve runs/demo/ric smollm2 --port 8001"),
    "export": ("steerable export runs/ric-smoke runs/ric-smoke-merged",),
    # each registered method's, from its record
    **{
        f"train {method.name}": train_examples(method)
        for method in methods.METHODS.values()
        if method.trainable
    },
}


def examples(name: str, markup: bool = True) -> str:
    """The `--help` epilog of command `name` (a key of EXAMPLES): one command a line (a long
    one continued with a backslash), escaped for typer's rich help (`markup`) so that it prints
    as written. A command without examples gets none (tests/test_presets.py asks for them)."""
    from rich.markup import escape

    text = "Examples:\n\n" + "\n".join(EXAMPLES[name]) if name in EXAMPLES else ""
    return escape(text) if markup else text


app = typer.Typer(
    help="Steer one language model across several objectives at inference time.",
    epilog=examples(""),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        Console().print(f"steerable {version('steerable')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Before the command (steerable --verbose CMD): keep the libraries' own progress bars "
            "and deprecation warnings.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=print_version),
    ] = False,
) -> None:
    if not verbose:
        from steerable.progress import quiet_libraries

        quiet_libraries()


def _warn(message) -> None:
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def _fail(err: SteerableError):
    from rich.markup import escape

    # escaped: a message naming e.g. list[str] must not be read as console markup
    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def command(fn):
    """Register a subcommand whose user errors print as one line and exit with status 2."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with user_errors():
            return fn(*args, **kwargs)

    return app.command(epilog=examples(fn.__name__.replace("_", "-")))(run)


# What the running command has claimed (its outputs' locks), released when it ends.
_held: contextvars.ContextVar[contextlib.ExitStack] = contextvars.ContextVar("held")


@contextlib.contextmanager
def user_errors():
    """SteerableError, and the OSError of a file that cannot be read or written, as one line
    and exit status 2 (Ctrl-C: where it stopped, status 130); what the command `claim`ed is
    released when it ends, by an error too."""
    with contextlib.ExitStack() as held:
        token = _held.set(held)
        try:
            yield
        except SteerableError as err:
            raise _fail(err)
        except OSError as err:  # an unwritable --out, a full disk, a file that vanished
            raise _fail(SteerableError(str(err)))
        except KeyboardInterrupt:
            raise _stopped()
        finally:
            _held.reset(token)


def _stopped():
    """Ctrl-C: one line saying where the command stopped and how to go on; exit status 130, the
    shell's for an interrupt. A stage's checkpoints stay, so the same command resumes it."""
    from rich.markup import escape

    from steerable.stages import running_stage

    stage = running_stage()
    if stage is None:
        where = "stopped (Ctrl-C) before the command finished; run the same command again to redo it"
    else:
        where = (
            f"stopped (Ctrl-C) in stage {stage.name} of {stage.parent.parent}; run the same command "
            "again to resume: the finished stages and the stage's last checkpoint are kept"
        )
    console.print(f"[bold yellow]interrupted:[/] {escape(where)}", highlight=False, soft_wrap=True)
    return typer.Exit(130)


def claim(
    out: Path,
    inputs: dict[str, object] | None = None,
    directory: bool = False,
    table: bool = False,
    inside_inputs: bool = True,
) -> None:
    """Before any work: refuse an output that cannot be written (a `table` in a format
    write_table does not know) or that is one of the command's `inputs` (option -> path), or
    inside one unless `inside_inputs`; then lock it until the command ends, so a second command
    writing it is refused; if the command fails, the stages it began without work are removed."""
    from steerable.data.loading import FORMATS
    from steerable.outputs import check_output, output_lock
    from steerable.stages import tidy_on_failure

    formats = FORMATS if table else None
    check_output(out, inputs, directory=directory, formats=formats, inside_inputs=inside_inputs)
    _held.get().enter_context(output_lock(out))
    _held.get().enter_context(tidy_on_failure())


ObjectiveOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--objective",
        "-o",
        help="Objective spec NAME=KIND:TARGET[?opt=v&...], repeatable (KIND: builtin, hf, py, moslim). "
        "Default: the embedded default objectives.",
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option(help="YAML file with an 'objectives:' list (specs or mappings).")
]


def _reward_set(objectives: list[str] | None, config: Path | None):
    from steerable.defaults import DEFAULT_OBJECTIVES
    from steerable.objectives import RewardSet
    from steerable.scorers import check_modality

    specs: list = list(objectives or [])
    if config is not None:
        import yaml

        try:
            data = yaml.safe_load(config.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise SteerableError(f"config {config}: cannot read it as YAML ({err})")
        if not isinstance(data, dict) or not isinstance(data.get("objectives"), list):
            raise SteerableError(f"config {config}: expected a mapping with an 'objectives:' list")
        if not data["objectives"]:
            raise SteerableError(
                f"config {config}: its 'objectives:' list is empty; give at least one objective "
                "(or leave out --config for the default objectives)"
            )
        specs += data["objectives"]
    rewards = RewardSet.from_specs(specs or list(DEFAULT_OBJECTIVES))
    check_modality([o.spec for o in rewards.objectives], "text", "steerable score")
    return rewards


@command
def objectives() -> None:
    """List the built-in scorers and the default objectives."""
    from steerable.defaults import DEFAULT_OBJECTIVES
    from steerable.scorers.builtin import BUILTINS

    table = Table("built-in", "raw score", "options")
    for name, (_, options, description) in BUILTINS.items():
        table.add_row(name, description, ", ".join(options) or "-")
    Console().print(table)
    Console().print("default objectives: " + "  ".join(DEFAULT_OBJECTIVES))


@command
def prepare(
    model: Annotated[
        str, typer.Option(help="Model alias (smollm2, tiny) to build into the cache.")
    ] = "smollm2",
) -> None:
    """Convert the embedded GGUF default (or build the tiny model) into the local cache."""
    from steerable.configs import check_value
    from steerable.defaults import DEFAULT_MODEL, TINY_MODEL, resolve_model

    check_value("--model", model, choices=(DEFAULT_MODEL, TINY_MODEL))
    console.print(f"{model}: {resolve_model(model)}")


def titles(where) -> str:
    """The titles of the registered methods `where` accepts, as prose lists them (RiC and MOSLIM)."""
    found = [method.title for method in methods.METHODS.values() if where(method)]
    return " and ".join(filter(None, [", ".join(found[:-1]), *found[-1:]]))


def steered_by(key: str) -> str:
    """Who a request's steering `key` steers, for an option's help: "RiC only", "RiC and MOSLIM"."""
    steered = (m for m in methods.METHODS.values() if m.policy is not None or m.modality == "image")
    found = [m for m in steered if key in m.steering]
    return titles(lambda m: m in found) + (" only" if len(found) == 1 else "")


def evaluated_with(option: str) -> str:
    """Who `evaluate --OPTION` applies to, for its help (its registry entries' evaluate_options)."""
    found = methods.names(lambda m: option in m.evaluate_options)
    return "/".join(found) + (" only" if len(found) == 1 else "")


LEVELLED = "/".join(methods.names(lambda m: "levels" in m.steering))  # the methods swept level by level
# the methods that load other methods' model directories, for --method's help: "mod and lora-mix
# read soups directories"
READ_BY = {d: methods.names(lambda m, d=d: d in m.reads) for m in methods.METHODS.values() for d in m.reads}
READERS = "; ".join(
    f"{' and '.join(names)} read{'s' if len(names) == 1 else ''} {d} directories"
    for d, names in READ_BY.items()
)


# The sampling options of `sample`, `generate` and `evaluate`: defined once, with the defaults
# of SamplingConfig.
SAMPLING = SamplingConfig()
MaxNewTokens = Annotated[int, typer.Option(help="Cap on generated tokens per response.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling: keep the most likely tokens up to this mass.")]
TopK = Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = all).")]
BatchSize = Annotated[int, typer.Option(help="Sequences per generate call.")]
Seed = Annotated[int, typer.Option(help="Random seed of the sampling.")]
Dtype = Annotated[
    str | None,
    typer.Option(
        help="Dtype of the model weights: float32, bfloat16 or float16 (default: the one a model directory records, else float32)."
    ),
]
PromptsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Your prompt file: .jsonl/.csv/.parquet/dataset directory with a 'prompt' column and an "
        "optional 'split' column (train or heldout), or .txt with one prompt a line. Default: the "
        "embedded prompt set."
    ),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let models run their own code, and py: scorers named in a model or statistics file run "
        "though this machine has not scored with that file as it is now (off).",
    ),
]


Yes = Annotated[
    bool,
    typer.Option(
        "--yes",
        "-y",
        help="Start without asking: a run estimated at over 10 minutes of generation asks first in an "
        "interactive shell (the estimate is printed either way).",
    ),
]


def confirm_cost(plan, yes: bool) -> None:
    """Print what `plan` will cost (answers, time at the measured rate) and a cheaper way where
    there is one, for a run of over a minute; over ten, in an interactive shell, ask unless
    `yes`. Not starting is exit status 1, before anything is generated. An image evaluation's
    `ImagePlan` is always said, and asks above ASK_ABOVE_UNET_PASSES in the same way."""
    from steerable import cost
    from steerable.evaluation.images import ImagePlan

    if isinstance(plan, ImagePlan):  # no measured rate: the images and UNet passes, always said
        line, long = plan.line(), plan.long
    else:
        estimate = cost.estimate(plan)
        if not estimate.worth_saying:
            return
        line, long = estimate.line(), estimate.long
    console.print(line, highlight=False, soft_wrap=True)
    if plan.note:
        console.print(plan.note, highlight=False, soft_wrap=True)
    asked = long and not yes and cost.interactive()
    if asked and not typer.confirm("start it?", default=False, err=True):
        console.print("not started (--yes starts without asking)", highlight=False)
        raise typer.Exit(1)


@command
def sample(
    out: Annotated[Path, typer.Option(help="Output table (.jsonl, .parquet, .csv).")],
    model: Annotated[
        str, typer.Option(help="Base model: smollm2, tiny, a hub id or a local model directory.")
    ] = "smollm2",
    prompts: PromptsOpt = None,
    split: Annotated[
        str, typer.Option(help="Prompt split: train, heldout or all (of --prompts when given).")
    ] = "train",
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    n_per_prompt: Annotated[int, typer.Option(help="Responses sampled per prompt.")] = 1,
    system: Annotated[str | None, typer.Option(help="System prompt for every request.")] = None,
    max_new_tokens: MaxNewTokens = SAMPLING.max_new_tokens,
    temperature: Temperature = SAMPLING.temperature,
    top_p: TopP = SAMPLING.top_p,
    top_k: TopK = SAMPLING.top_k,
    batch_size: BatchSize = SAMPLING.batch_size,
    seed: Seed = SAMPLING.seed,
    dtype: Dtype = None,
    trust_remote_code: TrustRemoteCode = False,
    yes: Yes = False,
) -> None:
    """Sample responses from a base model for a set of prompts (batched, left-padded), e.g. the
    data `steerable score` scores. A trained steerable model answers with `steerable generate`."""
    from steerable.configs import check_value
    from steerable.cost import Plan
    from steerable.data import load_prompts, write_table
    from steerable.defaults import load_causal_lm
    from steerable.generation import format_chat, generate_texts, generation_model_id

    if (Path(model) / "steerable.json").is_file():
        raise SteerableError(
            f"--model {model} is a steerable model directory; sample answers from a base model. To "
            f"answer prompts with this model: steerable generate --model {model} --prompts "
            f"{prompts or 'PROMPTS.jsonl'} --out {out.with_suffix('.jsonl')}"
        )
    check_value("--limit", limit, ge=1)
    claim(out, {"--prompts": prompts}, table=True)
    config = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        batch_size=batch_size,
        seed=seed,
    )

    prompt_list = load_prompts(split, limit, prompts)
    if n_per_prompt < 1:
        raise SteerableError("--n-per-prompt must be at least 1")
    lm, tokenizer = load_causal_lm(model, dtype or "float32", trust_remote_code=trust_remote_code)
    repeated = [p for p in prompt_list for _ in range(n_per_prompt)]
    what = f"{len(prompt_list)} prompts x {n_per_prompt} per prompt"
    confirm_cost(Plan(len(repeated), max_new_tokens, generation_model_id(lm), what), yes)
    responses = generate_texts(lm, tokenizer, format_chat(tokenizer, repeated, system), config)
    rows = [{"prompt": p, "response": r, "model": model} for p, r in zip(repeated, responses, strict=True)]
    write_table(out, rows)
    console.print(f"wrote {len(rows)} responses to {out}")


@command
def score(
    data: Annotated[
        Path,
        typer.Argument(
            help="Table (.jsonl/.json/.csv/.parquet) or saved HF dataset directory with prompt/response (or HH-RLHF chosen/rejected) columns."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Annotated output table; adds score_<name> (raw) and z_<name> (normalised) columns."
        ),
    ],
    stats: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the fitted statistics JSON (default: OUT with .stats.json appended, e.g. scored.jsonl.stats.json). Never the input or OUT; an existing file must hold the same statistics (or pass --force)."
        ),
    ] = None,
    stats_from: Annotated[
        Path | None,
        typer.Option(help="Normalise with these saved statistics instead of fitting (e.g. held-out data)."),
    ] = None,
    objective: ObjectiveOpt = None,
    config: ConfigOpt = None,
    split: Annotated[str | None, typer.Option(help="Split of a saved DatasetDict.")] = None,
    force: Annotated[
        bool, typer.Option(help="Replace a statistics file fitted on other rows or objectives.")
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            help="Let py: scorers named in --stats-from that this machine has not scored with as they are "
            "now (and hf: ones with trust_remote_code) run their code; only for files you trust."
        ),
    ] = False,
) -> None:
    """Score every (prompt, response) with each objective; write raw and normalised scores and
    the normalisation statistics (mean, std, min, max, quantiles). Nothing is written unless
    every row scored."""
    from steerable.data import write_table
    from steerable.data.loading import load_placed_pairs
    from steerable.objectives import RewardSet, scored_stats_path

    claim(out, {"DATA": data, "--stats-from": stats_from}, table=True)
    previous = None  # what the statistics file holds now
    if stats_from is not None:
        if objective or config or stats:
            raise SteerableError(
                "--stats-from fixes the objectives and statistics; drop --objective/--config/--stats"
            )
        rewards = RewardSet.load(stats_from, trust_remote_code=trust_remote_code)
    else:
        rewards = _reward_set(objective, config)
        stats = stats or scored_stats_path(out)
        if stats.resolve() in (data.resolve(), out.resolve()):
            raise SteerableError(f"--stats {stats} is the input or the --out table; choose another path")
        claim(stats, {"DATA": data})
        try:
            previous = RewardSet.load(stats).to_dict() if stats.exists() else None
        except SteerableError as err:
            raise SteerableError(
                f"--stats {stats} exists and is not a steerable statistics file ({err}); "
                "delete it or choose another path"
            )
    rows, places = load_placed_pairs(data, split)
    with warnings.catch_warnings(record=True) as caught:
        raw = rewards.annotate(
            rows, fit=stats_from is None, progress=True, places=[f"{data}, {place}" for place in places]
        )
    for warning in caught:  # e.g. zero spread on a single row
        _warn(warning.message)
    if previous is not None and previous != rewards.to_dict() and not force:
        raise SteerableError(
            f"{stats} holds statistics fitted on other rows or objectives; pass --force to replace "
            "them, or choose another --stats path"
        )
    write_table(out, rows)
    console.print(f"wrote {len(rows)} scored rows to {out}")
    if stats_from is None:
        rewards.save(stats)
        console.print(f"wrote statistics to {stats}")
    Console().print(summary_table(rewards.names, raw))


def summary_table(names: list[str], raw: np.ndarray) -> Table:
    """Per-objective mean/std/min/max and Spearman correlation between objectives."""
    from scipy.stats import rankdata

    table = Table(
        "objective",
        "mean",
        "std",
        "min",
        "max",
        *[f"rho vs {n}" for n in names],
        title=f"{raw.shape[0]} scored pairs",
    )
    # Spearman = Pearson on ranks; a K x K matrix for any K. A constant column has no ranking:
    # its correlations read "constant", and the caption says which score every answer got.
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        rho = np.atleast_2d(np.corrcoef(rankdata(raw, axis=0), rowvar=False))
    constant = [k for k in range(len(names)) if raw.shape[0] and np.ptp(raw[:, k]) == 0]
    for k, name in enumerate(names):
        col = raw[:, k]
        table.add_row(
            name,
            *(f"{v:.3f}" for v in (col.mean(), col.std(), col.min(), col.max())),
            *("constant" if {k, j} & set(constant) else f"{rho[k, j]:+.3f}" for j in range(len(names))),
        )
    if constant:
        table.caption = "; ".join(
            f"{names[k]} is constant: every answer scored {raw[0, k]:.4g}, no ranking" for k in constant
        )
    return table


train_app = typer.Typer(help="Train a steerable model.", epilog=examples("train"), no_args_is_help=True)
app.add_typer(train_app, name="train")


TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_config_command(
    ctx: typer.Context, config_cls, run, made="steerable model directory", plan=None
) -> None:
    """Parse a method's config dataclass from the remaining arguments with TRL's TrlParser --
    every field is an option and `--help` lists them with their docs; `--config FILE.yaml` sets
    fields that flags then override -- then run the recipe and print what it `made` (a name, or
    a function of the config giving one) where. Every user error is one line. With `plan` (the
    config -> a `cost.Plan`), the cost is printed first and `--yes` skips the question (without
    one, `--yes` is accepted and does nothing).
    `--preset NAME` starts from a shipped preset's values (steerable.presets) as `--config`
    would; the preset's note is printed when the run starts and when it ends."""
    from rich.markup import escape

    from steerable.configs import parse_config
    from steerable.presets import names, with_preset

    # --yes is taken by every trainer (a script may pass it to all of them); without a plan
    # there is nothing to ask, so it does nothing
    args = [arg for arg in ctx.args if arg not in ("--yes", "-y")]
    yes = len(args) < len(ctx.args)
    with user_errors():
        args, note = with_preset(ctx.info_name, args, ctx.command_path)
        epilog = examples(f"train {ctx.info_name}", markup=False)
        if names(ctx.info_name):
            epilog += (
                f"\n\n--preset NAME starts from a shipped preset's values ({', '.join(names(ctx.info_name))}); "
                "the options you give override them."
            )
        config = parse_config(config_cls, args, prog=ctx.command_path, epilog=epilog)
        if note:
            console.print(f"[bold]preset:[/] {escape(note)}", highlight=False, soft_wrap=True)
        if plan is not None:
            confirm_cost(plan(config), yes)
        claim(Path(config.output_dir), directory=True)
        out = run(config)
        console.print(f"{made(config) if callable(made) else made}: {out}")
        if note:
            console.print(f"[bold]preset:[/] {escape(note)}", highlight=False, soft_wrap=True)


@train_app.command("rm", context_settings=TRAIN_CONTEXT)
def train_rm_command(ctx: typer.Context) -> None:
    """Scalar Bradley-Terry reward model from preference pairs or a scored table, usable as an hf: objective (all options: --help)."""
    from steerable.reward_models.pairwise import RMConfig, summary, train_rm

    def run(config: RMConfig):
        out = train_rm(config)
        Console().print(summary(out), highlight=False, soft_wrap=True)  # the result: stdout
        return out

    run_config_command(ctx, RMConfig, run, made="reward model directory")


@train_app.command("moslim-rm", context_settings=TRAIN_CONTEXT)
def train_moslim_rm_command(ctx: typer.Context) -> None:
    """MOSLIM's reward model: one softmax head per objective over L levels on a shared backbone; prints the held-out report (all options: --help)."""
    import json

    from steerable.reward_models.multihead import MANIFEST, MOSLIMRMConfig, metrics_table, train_moslim_rm

    def run(config: MOSLIMRMConfig) -> Path:
        out = train_moslim_rm(config)
        Console().print(metrics_table(json.loads((out / MANIFEST).read_text())["metrics"]))
        return out

    run_config_command(ctx, MOSLIMRMConfig, run, made="MOSLIM reward model directory")


@train_app.command("np-rm", context_settings=TRAIN_CONTEXT)
def train_np_rm_command(ctx: typer.Context) -> None:
    """Few-shot NP-BTL reward model with its BTL and per-type oracle baselines; prints held-out accuracy vs context size (all options: --help)."""
    from steerable.evaluation.fewshot import accuracy_table, result, run_np_rm
    from steerable.methods.np_rm import NPRMConfig

    def run(config: NPRMConfig) -> Path:
        out = run_np_rm(config)
        Console(width=150).print(accuracy_table(result(out)))
        return out

    run_config_command(ctx, NPRMConfig, run, made="NP reward model directory")


def train_method_command(method) -> None:
    """`steerable train NAME` for a registered method: its config's fields are the options, its
    recipe runs, and what its `report` makes is printed."""
    from steerable.methods.base import resolve

    def run_command(ctx: typer.Context) -> None:
        def run(config) -> Path:
            out = resolve(method.recipe)(config)
            if method.report:
                made = out
                for step in method.report:  # the model directory, read and made into tables
                    made = resolve(step)(made)
                for table in made:
                    Console(width=150).print(table)
            return out

        def made(config) -> str:  # a run told to stop early says where it stopped
            stop = getattr(config, "stop_after", None)
            return f"stopped after stage {stop}" if stop else "steerable model directory"

        plan = resolve(method.plan) if method.plan else None
        run_config_command(ctx, resolve(method.config), run, made, plan=plan)

    extra = "; --yes: start a long run without asking" if method.plan else ""
    help = f"{method.summary} (all options: --help{extra})."
    train_app.command(method.name, context_settings=TRAIN_CONTEXT, help=help)(run_command)


for _method in methods.METHODS.values():
    if _method.trainable:
        train_method_command(_method)


# Who generate's image options apply to, for their help: "RiC (images) only"
IMAGES_ONLY = titles(lambda m: m.modality == "image") + " only"


@command
def generate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="Steerable model directory (any method; has steerable.json).")],
    as_method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help=f"Generate as this method (default: the one that wrote --model); {READERS}.",
        ),
    ] = None,
    prompts: Annotated[list[str] | None, typer.Argument(help="Prompt(s) to answer (or --prompts).")] = None,
    prompts_file: Annotated[
        str | None,
        typer.Option(
            "--prompts",
            help="Answer the prompts of a file (as sample's --prompts: every row, whatever its split), or "
            "- for stdin: one prompt a line, or JSON lines with a 'prompt' each.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write one row per prompt (prompt, response, the steering applied) to this table "
            "(.jsonl) instead of printing them. An image model needs it: a folder for grid.png, each "
            "image as PNG and images.jsonl (prompt, file, the steering applied, each objective's score)."
        ),
    ] = None,
    prefer: Annotated[
        str | None, typer.Option(help="Preference, e.g. brief=0.7,positive=0.3 (or 0.7,0.3).")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help=f"{steered_by('targets')}: explicit normalised targets, e.g. brief=1.0,positive=-0.5."
        ),
    ] = None,
    levels: Annotated[
        str | None,
        typer.Option(
            help=f"{steered_by('levels')}: intensity levels 1..L for any objectives, e.g. brief=4,positive=2."
        ),
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option(
            help=f"{steered_by('mapping')}: how --prefer becomes tags: linf, l2, linear or quantile "
            "(each objective's training quantile at min(K w, 1)) (default: the model's)."
        ),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(help=f"{titles(lambda m: m.policy is not None)}: system text (before any tags)."),
    ] = None,
    examples: Annotated[
        Path | None,
        typer.Option(
            help=f"{steered_by('examples')}: a JSONL (or JSON list) of your choices, {{prompt, chosen, rejected}} "
            "per row."
        ),
    ] = None,
    divergence: Annotated[
        float | None,
        typer.Option(
            help=f"{steered_by('divergence')}: the alpha of the alpha-divergence family, in [0, 1] "
            "(default 0: reverse KL, where negative weights are defined)."
        ),
    ] = None,
    max_new_tokens: MaxNewTokens = SAMPLING.max_new_tokens,
    temperature: Temperature = SAMPLING.temperature,
    top_p: TopP = SAMPLING.top_p,
    top_k: TopK = SAMPLING.top_k,
    batch_size: BatchSize = SAMPLING.batch_size,
    seed: Seed = SAMPLING.seed,
    dtype: Dtype = None,
    trust_remote_code: TrustRemoteCode = False,
    n: Annotated[int | None, typer.Option(help=f"{IMAGES_ONLY}: images per prompt (default 4).")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help=f"{IMAGES_ONLY}: classifier-free guidance scale >= 0 (default: the model's)."),
    ] = None,
    sampling_steps: Annotated[
        int | None, typer.Option(help=f"{IMAGES_ONLY}: denoising steps per image (default: the model's).")
    ] = None,
) -> None:
    """Generate steered responses from a trained model directory: RiC maps the preference to
    target tags and MOSLIM to intensity levels (or take --target / --levels as given); Rewarded
    Soups interpolates its adapters (--method mod or lora-mix mixes the same experts' next-token
    log-probabilities or outputs instead); MORLHF answers at the weight vectors it was trained
    for; NP-DPO follows the choices in --examples (without them, its prior). The steering applied is
    printed (and written in each --out row) as the server echoes it. An image model (RiC on
    images) makes --n images per prompt into the --out folder, with a grid and their scores."""
    from steerable.policy import load_manifest

    prompts = prompts_to_answer(prompts, prompts_file)
    manifest = load_manifest(model)
    method = methods.get(as_method or manifest.method)
    method.check_reads(manifest.method, model)
    image = method.modality == "image"
    refuse_options_of_other_modality(ctx, method.modality, f"{model} (a {method.name} model)")
    if image:
        from steerable.configs import check_value

        if out is None:
            raise SteerableError(
                f"{model} makes images: give --out FOLDER for the grid, the images and their scores"
            )
        check_value("--n", n, ge=1)
        check_value("--guidance", guidance, ge=0)
        check_value("--sampling-steps", sampling_steps, ge=1)
        check_value("--batch-size", batch_size, ge=1)
    if out is not None:
        source = None if prompts_file in (None, "-") else Path(prompts_file)
        inputs = {"--model": model, "--prompts": source, "--examples": examples}
        claim(out, inputs, directory=image, table=not image, inside_inputs=not image)
        if image:
            check_images_folder(out)
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        batch_size=batch_size,
        seed=seed,
    )
    steering = steering_of_options(prefer, target, levels, mapping, examples, divergence)
    for key in steering:
        if key not in method.steering:
            takes = ", ".join(
                methods.names(lambda m, key=key: key in m.steering and (m.trainable or m.reads))
            )
            read_as = "" if method.name == manifest.method else f" (generating as {method.name})"
            raise SteerableError(
                f"{STEERING_OPTIONS[key]} steers {takes} models; {model} is a {manifest.method} model{read_as}"
            )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if image:
            options = {"n": n or 4, "guidance": guidance, "steps": sampling_steps, "seed": seed}
            made, applied = generate_images(
                model, method, prompts, steering, options, batch_size, trust_remote_code
            )
        elif method.policy is not None:
            responses, applied = generate_with_policy(
                model, method.name, prompts, steering, system, sampling, dtype, trust_remote_code
            )
        else:
            responses, applied = generate_with_sweep(
                model, method, prompts, steering, system, sampling, dtype, trust_remote_code
            )
    # e.g. a target clipped to the trained range (once: the steering is checked, then applied)
    for message in dict.fromkeys(str(w.message) for w in caught):
        _warn(message)
    for key, value in applied.items():
        console.print(steering_line(key, value), highlight=False, soft_wrap=True)
    if image:
        write_images(out, made)
        return
    if out is not None:
        from steerable.data import write_table

        rows = [{"prompt": p, "response": r, **applied} for p, r in zip(prompts, responses, strict=True)]
        write_table(out, rows)
        console.print(f"wrote {len(rows)} responses to {out}")
        return
    for prompt, response in zip(prompts, responses, strict=True):
        Console().print(f"[bold]> {prompt}[/]\n{response}\n", highlight=False)


# generate's steering options, by the request key each gives (the server's `steering` keys)
STEERING_OPTIONS = {
    "weights": "--prefer",
    "mapping": "--mapping",
    "targets": "--target",
    "levels": "--levels",
    "examples": "--examples",
    "divergence": "--divergence",
}


def steering_of_options(prefer, target, levels, mapping, examples, divergence=None) -> dict:
    """generate's options as one request `steering` (the keys of a served request), those given."""
    from steerable.conditioning import parse_levels_text
    from steerable.preferences import parse_targets

    steering = {
        "weights": prefer,
        "mapping": mapping,
        "targets": None if target is None else parse_targets(target),
        "levels": None if levels is None else parse_levels_text(levels),
        "divergence": divergence,
    }
    if examples is not None:
        from steerable.data.loading import read_table

        steering["examples"] = read_table(examples)
    return {key: value for key, value in steering.items() if value is not None}


def generate_with_policy(model, method, prompts, steering, system, sampling, dtype, trust_remote_code):
    """(responses, the steering applied) of a model a SteerablePolicy loads as `method`: the
    steering checked by its method's `request`, as the server checks a request's, and its echo."""
    from steerable.policy import SteerablePolicy

    policy = SteerablePolicy.from_pretrained(
        model, dtype=dtype, trust_remote_code=trust_remote_code, method=method
    )
    _, _, applied = policy.request(steering)
    responses = policy.generate(
        prompts,
        preference=steering.get("weights"),
        targets=steering.get("targets"),
        levels=steering.get("levels"),
        examples=steering.get("examples"),
        mapping=steering.get("mapping"),
        divergence=steering.get("divergence"),
        system=system,
        sampling=sampling,
    )
    return responses, applied


def generate_with_sweep(model, method, prompts, steering, system, sampling, dtype, trust_remote_code):
    """(responses, the steering applied) of a model only its `sweep` builder answers for (the RL
    baselines): steered by weights alone, echoed as the server names them."""
    from steerable.evaluation.evaluate import method_generator
    from steerable.preferences import Preference

    if system is not None:
        tagged = " and ".join(m.title for m in methods.METHODS.values() if m.policy is not None)
        raise SteerableError(
            f"--system applies to {tagged} models; {model} is a {method.name} model (steer it with --prefer)"
        )
    built = method_generator(
        method.name, str(model), sampling, None, dtype=dtype, trust_remote_code=trust_remote_code
    )
    names = built.rewards.names
    preference = Preference.parse(steering.get("weights", [1.0] * len(names)), names)
    responses = built.generate(list(prompts), np.array(preference.weights))
    return responses, {"weights": dict(zip(names, preference.weights, strict=True))}


# generate's and evaluate's options read by one kind of model only (option -> parameter), refused
# on the other
TEXT_OPTIONS = {
    "--system": "system",
    "--max-new-tokens": "max_new_tokens",
    "--temperature": "temperature",
    "--top-p": "top_p",
    "--top-k": "top_k",
    "--dtype": "dtype",
}
IMAGE_OPTIONS = {"--n": "n", "--guidance": "guidance", "--sampling-steps": "sampling_steps"}
IMAGES_TABLE = "images.jsonl"
GRID = "grid.png"


def refuse_options_of_other_modality(ctx: typer.Context, modality: str, model: str) -> None:
    """The options given on the command line that a model of `modality` cannot read (text
    sampling for an image model, --n, --guidance, --sampling-steps for a language model),
    refused in one line naming them; `model` names the model (or method) in it."""
    image = modality == "image"
    given = [
        option
        for option, name in (TEXT_OPTIONS if image else IMAGE_OPTIONS).items()
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    ]
    if not given:
        return
    if image:
        raise SteerableError(
            f"{', '.join(given)} steer text generation; {model} makes images: leave them out (it samples "
            "with --guidance, --sampling-steps and --seed)"
        )
    makers = ", ".join(methods.names(lambda m: m.modality == "image"))
    raise SteerableError(
        f"{', '.join(given)} apply to image models ({makers}); {model} makes text: leave them out"
    )


def check_images_folder(out: Path) -> None:
    """generate's image folder is new, empty, or one an earlier generate wrote (it is replaced
    whole), never a folder of other files."""
    if out.is_dir() and any(out.iterdir()) and not (out / IMAGES_TABLE).is_file():
        raise SteerableError(f"--out {out} holds other files; give a new or empty folder for the images")


def generate_images(model, method, prompts, steering, options, batch_size, trust_remote_code):
    """(the images, a list of (image, row) per prompt, and the steering applied) of an image
    model: `options["n"]` images per prompt, image j of every prompt from seed + j (so grids of
    two steerings differ by the steering alone), each scored by the model's objectives unless
    one may not run here (an untrusted py: scorer), which is said and leaves the scores out."""
    from steerable.evaluation.images import image_scores

    policy = method.image_policy().from_pretrained(model, trust_remote_code=trust_remote_code)
    targets, applied = policy.request(steering)
    n, seed = options["n"], options["seed"] or 0
    repeated = [prompt for prompt in prompts for _ in range(n)]
    seeds = [seed + j for _ in prompts for j in range(n)]
    images = policy.generate(
        repeated, targets=targets, guidance=options["guidance"], steps=options["steps"], seed=seeds,
        batch_size=batch_size,
    )  # fmt: skip
    raw, why = image_scores(policy.rewards, repeated, images)
    if raw is None:
        _warn(f"the images are not scored: {why}")
        scores = [{} for _ in repeated]
    else:
        names = policy.rewards.names
        scores = [{f"score_{name}": float(v) for name, v in zip(names, row, strict=True)} for row in raw]
    width = len(str(len(prompts)))
    made = []
    for i, prompt in enumerate(prompts):
        row = []
        for j in range(n):
            k = i * n + j
            record = {"prompt": prompt, "file": f"{i + 1:0{width}d}-{j + 1}.png", "seed": seeds[k], **applied}
            row.append((images[k], {**record, **scores[k]}))
        made.append(row)
    return made, applied


def write_images(out: Path, made: list[list[tuple]]) -> None:
    """generate's image folder, whole or not at all: written beside `out`, then moved into place
    (replacing an earlier run's folder), so an error leaves no half-written folder."""
    import json
    import shutil

    from steerable.evaluation.images import readable_grid

    tmp, old = out.with_name(f".{out.name}.writing"), out.with_name(f".{out.name}.replaced")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for row in made:
            for image, record in row:
                image.save(tmp / record["file"])
        readable_grid([[image for image, _ in row] for row in made]).save(tmp / GRID)
        lines = [json.dumps(record) + "\n" for row in made for _, record in row]
        (tmp / IMAGES_TABLE).write_text("".join(lines))
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)  # the earlier run's folder back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    count = sum(len(row) for row in made)
    scored = "with their scores" if any("score_" in key for key in made[0][0][1]) else "not scored"
    console.print(
        f"wrote {count} images of {len(made)} prompt(s) to {out}: {GRID}, {IMAGES_TABLE} ({scored})"
    )


def steering_line(key: str, value) -> str:
    """One key of the steering applied, as generate prints it."""
    if isinstance(value, dict):
        value = ", ".join(f"{n}={v:+.2f}" if isinstance(v, float) else f"{n}={v}" for n, v in value.items())
    return f"{key}: {value if value != '' else 'none'}"


def prompts_to_answer(given: list[str] | None, source: str | None) -> list[str]:
    """generate's prompts: the arguments, the prompts of a file, or stdin's (`source` "-")."""
    from steerable.data.prompts import load_prompts, parse_prompt_lines

    if given and source is not None:
        raise SteerableError("give prompts as arguments or with --prompts, not both")
    if source == "-":
        return parse_prompt_lines(sys.stdin.read(), "stdin")
    if source is not None:
        return load_prompts("all", None, source)
    if not [p for p in given or [] if p.strip()]:
        raise SteerableError("no prompts given: pass them as arguments, or --prompts FILE (- reads stdin)")
    return list(given)


@command
def evaluate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for result.json, report.md, front.png, CSVs.")],
    method: Annotated[
        str,
        typer.Option(help=f"The method evaluated: {', '.join(methods.names())}."),
    ] = "ric",
    model: Annotated[
        str,
        typer.Option(
            help=f"{'/'.join(methods.names(lambda m: m.own_directory))}: the model directory it wrote. "
            f"{'/'.join(methods.names(lambda m: not m.own_directory))}: the base model."
        ),
    ] = "runs/ric",
    stats: Annotated[
        str | None,
        typer.Option(
            help="Objectives + statistics shared by the comparison: a stats JSON or a steerable model directory (prompting needs it)."
        ),
    ] = None,
    prompts: PromptsOpt = None,
    split: Annotated[
        str,
        typer.Option(
            help="Prompt split (of --prompts when given); prompts the model trained on are refused."
        ),
    ] = "heldout",
    limit: Annotated[int | None, typer.Option(help="Use the first N prompts.")] = None,
    resolution: Annotated[
        int,
        typer.Option(
            help="Grid resolution: each weight in steps of 1/resolution. K=2 gives resolution+1 points, "
            "K=3 (resolution+1)(resolution+2)/2: 66 at 10, 15 at 4."
        ),
    ] = 10,
    adapter: Annotated[
        str | None,
        typer.Option(
            help=f"{evaluated_with('adapter')}: evaluate this adapter instead (e.g. MODEL/stages/sft/weights, "
            "RiC's before online MORS)."
        ),
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option(
            help=f"{evaluated_with('mapping')}: linf, l2, linear or quantile (each objective's training "
            "quantile at min(K w, 1)) instead of the model's stored mapping."
        ),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            help=f"{evaluated_with('guidance')}: classifier-free guidance scale, >= 0 (default: the model's)."
        ),
    ] = None,
    sampling_steps: Annotated[
        int | None,
        typer.Option(
            help=f"{evaluated_with('sampling_steps')}: denoising steps per image (default: the model's)."
        ),
    ] = None,
    divergence: Annotated[
        float | None,
        typer.Option(
            help=f"{evaluated_with('divergence')}: the alpha of the alpha-divergence family, in [0, 1] "
            "(default 0: reverse KL)."
        ),
    ] = None,
    max_new_tokens: MaxNewTokens = SAMPLING.max_new_tokens,
    temperature: Temperature = SAMPLING.temperature,
    top_p: TopP = SAMPLING.top_p,
    top_k: TopK = SAMPLING.top_k,
    batch_size: BatchSize = SAMPLING.batch_size,
    seed: Seed = SAMPLING.seed,
    samples: Annotated[
        int,
        typer.Option(
            help="Responses (images) per prompt at each point: their mean is the prompt's score; more "
            "samples make the means and the controllability less noisy (and cost as much more)."
        ),
    ] = 1,
    dtype: Dtype = None,
    trust_remote_code: TrustRemoteCode = False,
    level_sweep: Annotated[
        bool,
        typer.Option(
            help=f"{LEVELLED}: also answer at each objective's levels 1..L alone (controllability by level)."
        ),
    ] = True,
    level_samples: Annotated[
        int | None,
        typer.Option(help=f"{LEVELLED}: responses per prompt at each level (default: --samples)."),
    ] = None,
    yes: Yes = False,
) -> None:
    """Sweep a preference grid on held-out prompts: mean score per objective per point, Pareto
    front, hypervolume, controllability, compute; for MOSLIM also each objective's levels; for
    an image method (default prompts: the ten digit captions) the base model's point and a
    front of thumbnails, each point's images under OUT/images. JSON, CSV, PNG and Markdown."""
    from steerable.configs import check_value
    from steerable.evaluation.evaluate import evaluate as run_evaluation
    from steerable.evaluation.evaluate import evaluation_prompts
    from steerable.evaluation.report import write_report

    check_value("--limit", limit, ge=1)
    if methods.get(method).modality == "image":  # a text method's image options: `method_generator`
        refuse_options_of_other_modality(ctx, "image", method)
    claim(
        out, {"--model": model, "--stats": stats, "--adapter": adapter, "--prompts": prompts}, directory=True
    )
    prompt_list, source = evaluation_prompts(method, split, limit, prompts)
    result = run_evaluation(
        method,
        model,
        prompt_list,
        resolution,
        SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            batch_size=batch_size,
            seed=seed,
        ),
        stats,
        adapter=adapter,
        mapping=mapping,
        samples=samples,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        prompt_split=source,
        prompt_limit=limit,
        levels=level_sweep,
        level_samples=level_samples,
        before_sweep=lambda plan: confirm_cost(plan, yes),
        guidance=guidance,
        sampling_steps=sampling_steps,
        images_to=out,
        divergence=divergence,
    )
    result.save(out)
    report = write_report([result], out)
    Console().print(report.read_text(), highlight=False)


@command
def report(
    results: Annotated[
        list[Path], typer.Argument(help="Evaluation directories (or result.json files) to overlay.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the combined report.")],
) -> None:
    """Overlay several evaluations (same objectives and statistics) in one report and plot."""
    from steerable.evaluation.report import EvaluationResult, write_report

    loaded = [EvaluationResult.load(path) for path in results]
    Console().print(write_report(loaded, out).read_text(), highlight=False)


def _print_comparison(results, out: Path) -> None:
    from rich import box

    from steerable.evaluation.report import notes_lines, per_token, reference_point, signed, summary

    names = results[0].names
    rows = summary(results)
    reference = ", ".join(
        f"{n}={v:.4g}" for n, v in zip(names, reference_point(results[0].rewards), strict=True)
    )
    table = Table(
        "method",
        "points",
        "front",
        "HV",
        *[f"ctrl {n}" for n in names],
        *[f"asked {n}" for n in names],
        "w.z",
        "gain",
        "orth",
        "miscal",
        "train s",
        "eval s",
        "fwd/tok",
        "ms/tok",
        "vs base",
        title="comparison",
        box=box.SIMPLE_HEAD,
        caption=f"HV: hypervolume (reference: 5% quantile of the training scores, {reference}); front: "
        "points on the front; ctrl: controllability (Spearman of weight vs. achieved score); asked: "
        "Spearman of the requested target or level vs. achieved score (models steered by tags); w.z: "
        "mean over the grid of weights . normalised scores; gain: training stds moved along the asked "
        "direction per unit of weight; orth: the share of each move off the asked direction; miscal: "
        "the slope against the requested targets minus 1 (+ overshoot); fwd/tok: forwards of the base model per "
        "generated token; ms/tok: measured; vs base: ms/tok relative to the prompting row",
    )
    for row in rows:
        table.add_row(
            row["method"],
            str(row["points"]),
            str(row["front"]),
            f"{row['hypervolume']:.4g}",
            *[signed(row[f"controllability_{n}"], f"controllability_{n}" in row["notes"]) for n in names],
            *[signed(row[f"requested_{n}"], f"requested_{n}" in row["notes"]) for n in names],
            signed(row["inner_product"]),
            signed(row["gain"]),
            "-" if row["orthogonality"] is None else f"{row['orthogonality']:.3f}",
            signed(row["miscalibration"]),
            f"{row['train_seconds']:.0f}",
            f"{row['eval_seconds']:.0f}",
            *per_token(row),
        )
    # not a terminal (a log file, CI): wide enough that no number is cut short
    wide = Console() if Console().is_terminal else Console(width=200)
    wide.print(table)
    for line in notes_lines(rows):  # a correlation shown as n/a, and why
        wide.print(f"n/a: {line}", highlight=False)
    wide.print(f"report: {out / 'report.md'}   plot: {out / 'front.png'}")


@command
def compare(
    out: Annotated[Path, typer.Option(help="Output directory (stages are cached here).")],
    config: Annotated[
        Path | None, typer.Option(help="YAML configuration (see steerable.evaluation.compare).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            # evaluation.compare.METHOD_ORDER, without importing it here
            help="Comma-separated methods: "
            + ", ".join(methods.names(lambda m: m.compare is not None or not m.own_directory))
            + ", or a variant the config names (variants:)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Base model for every method.")] = None,
    yes: Yes = False,
) -> None:
    """Train and evaluate several methods on one configuration; one report with overlaid fronts,
    hypervolume, controllability and compute per method. Re-runs skip finished stages."""
    from steerable.evaluation.compare import CompareConfig, compare_cost, run_compare, seed_folder

    overrides = {"model": model, "methods": methods.split(",") if methods else None}
    settings = CompareConfig.from_yaml(config, overrides)
    confirm_cost(compare_cost(settings, out), yes)
    claim(out, {"--config": config}, directory=True)
    line = ["steerable", "compare"]  # what made the run, recorded with its budget ladder
    for option, value in (("--config", config), ("--methods", methods), ("--model", model)):
        line += [option, str(value)] if value is not None else []
    results = run_compare(settings, out, shlex.join([*line, "--out", str(out)]))
    if settings.seeds:  # the first seed's table; the spread over the seeds is in seeds.md
        _print_comparison(results, seed_folder(out, settings.seeds[0]))
        Console().print(f"over seeds {settings.seeds}: {out / 'seeds.md'}", highlight=False)
    else:
        _print_comparison(results, out)
    if settings.budgets:
        Console().print(f"hypervolume against compute: {out / 'ladder.md'}   plot: {out / 'ladder.png'}")


@command
def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory (re-runs resume finished stages). Default: runs/demo, with a preset "
            "runs/demo-PRESET."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Start from a shipped preset: smoke runs every stage in under 3 minutes on 2 cores, to "
            "show the pipeline works (not steering quality)."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Base model instead of the demo's (smollm2).")] = None,
    prompts: PromptsOpt = None,
    yes: Yes = False,
) -> None:
    """RiC on the embedded SmolLM2 (offline data, reward-conditioned SFT), evaluated against the
    prompting floor: table, front plot and report, and the command that serves the model. With
    --prompts, on your prompts: their train split trains, their heldout split evaluates."""
    from rich.markup import escape

    from steerable.evaluation.compare import DEMO_CONFIG, CompareConfig, compare_cost, run_compare
    from steerable.io import atomic_write_text
    from steerable.presets import preset_file, preset_note

    # a preset is read as `compare --config` reads its YAML; without one, the demo's own values
    path = None if preset is None else preset_file("demo", preset, "steerable demo")
    config = CompareConfig.from_yaml(
        path,
        {
            **(DEMO_CONFIG if path is None else {}),
            "model": model,
            "prompts": None if prompts is None else str(prompts),
        },
    )
    out = out or Path("runs/demo" if preset is None else f"runs/demo-{preset}")
    confirm_cost(compare_cost(config, out), yes)
    claim(out, {"--prompts": prompts}, directory=True)
    note = None if path is None else preset_note(path)
    if note:
        console.print(f"[bold]preset:[/] {escape(note)}", highlight=False, soft_wrap=True)
    results = run_compare(config, out)
    if note:  # the report says what the run was, wherever it is read
        report = out / "report.md"
        atomic_write_text(report, f"> **preset {preset}:** {note}\n\n{report.read_text()}")
    _print_comparison(results, out)
    if note:
        Console().print(f"[bold]preset:[/] {escape(note)}", highlight=False, soft_wrap=True)
    Console().print(
        f"try it: steerable serve {out / 'ric'}   then open http://127.0.0.1:8000/ (the playground)",
        highlight=False,
        soft_wrap=True,
    )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@command
def serve(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Trained model directories, or base models by id or alias (smollm2, tiny); METHOD=DIR "
            f"serves a directory as another method that reads it ({READERS}), as model id DIRNAME:METHOD "
            "(one directory may be served under several methods)."
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind (not loopback: reachable by others).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer KEY' on every /v1 request.")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Requests generated together in one batch.")] = 32,
    max_queue: Annotated[int, typer.Option(help="Completions waiting at most; beyond it, 503.")] = 256,
    max_tokens: Annotated[int, typer.Option(help="The largest max_tokens a request may ask for.")] = 1024,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Proxy mode: an OpenAI-compatible engine (base URL ending in /v1) serving the merged "
            "model of `steerable export`; steering is rendered here and the request forwarded."
        ),
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="Proxy mode: the model name the upstream knows it by.")
    ] = None,
    limit_concurrency: Annotated[
        int, typer.Option(help="Open connections and requests at most; beyond it, 503 with Retry-After.")
    ] = LIMIT_CONCURRENCY,
    timeout_keep_alive: Annotated[
        int, typer.Option(help="Seconds an idle kept-alive connection stays open.")
    ] = TIMEOUT_KEEP_ALIVE,
    read_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a request's header and body may take to arrive; slower clients are cut off."
        ),
    ] = READ_TIMEOUT,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Serve models behind an OpenAI-compatible API (POST /v1/chat/completions with a `steering`
    field, GET /v1/models, GET /health, the playground at /); concurrent requests are batched
    together, or, with --upstream, forwarded to an engine such as vLLM or `transformers serve`."""
    import uvicorn

    from steerable.configs import check_value
    from steerable.serving.api import ServedModel, create_app
    from steerable.serving.local import listening_socket, uvicorn_config

    counts = {
        "--max-batch": max_batch,
        "--max-queue": max_queue,
        "--max-tokens": max_tokens,
        "--limit-concurrency": limit_concurrency,
        "--timeout-keep-alive": timeout_keep_alive,
    }
    for option, value in counts.items():
        check_value(option, value, ge=1)
    check_value("--port", port, ge=1, le=65535)
    check_value("--read-timeout", read_timeout, gt=0)
    specs = [served_spec(m) for m in models]
    if upstream is not None:
        check_url("--upstream", upstream)
        if len(models) != 1 or specs[0][1] is not None:
            raise SteerableError(
                "--upstream serves one model directory, as the method that wrote it (the upstream serves "
                "it merged)"
            )
    with listening_socket(host, port) as sock:  # taken before the models load: a busy port fails first
        if host not in LOOPBACK:
            _warn(
                f"binding {host}: the API is reachable from other machines"
                + ("" if api_key else "; set --api-key")
            )
        if upstream is not None:
            served = [ServedModel.proxy(models[0], upstream, upstream_model, max_queue)]
        else:
            served = [
                ServedModel.load(path, max_batch, max_queue, trust_remote_code, method)
                for path, method in specs
            ]
        ids = [m.id for m in served]
        if len(set(ids)) != len(ids):
            raise SteerableError(
                f"two models have the same id in {ids}; serve each directory once per method, directories "
                "of different names"
            )
        app_ = create_app(served, api_key=api_key, max_tokens_limit=max_tokens)
        for line in start_message([(m.id, m.method) for m in served], host, port):
            console.print(line, highlight=False, soft_wrap=True)
        for model in served:
            if model.policy is not None and model.policy.rewards.refusal is not None:
                _warn(f"{model.id}: POST /v1/score will answer 403: {model.policy.rewards.refusal}")
        config = uvicorn_config(app_, host, port, limit_concurrency, timeout_keep_alive, read_timeout)
        uvicorn.Server(config).run(sockets=[sock])


def served_spec(spec: str) -> tuple[str, str | None]:
    """(the model, the method it is served as: None for its own) of a `serve` argument: DIR,
    a base model, or METHOD=DIR (a path that exists as written is a path, "=" or not)."""
    method, sep, path = spec.partition("=")
    if not sep or Path(spec).exists():
        return spec, None
    if method not in methods.METHODS:
        raise SteerableError(
            f"{spec!r}: {method!r} is not a method; METHOD=DIR serves DIR as METHOD, one of "
            f"{', '.join(methods.names())}"
        )
    return path, method


# A wildcard bind listens on every address; a browser cannot open it, so its loopback is shown.
WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def start_message(served: list[tuple[str, str]], host: str, port: int) -> list[str]:
    """What `serve` prints when it starts: each (model id, method)'s API and the playground's URL
    (for a wildcard bind, this machine's loopback, and a line saying it listens on every address)."""
    shown = WILDCARD.get(host, host)
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"  # an IPv6 address goes in brackets
    lines = [f"serving {model} ({method}) at {base}/v1" for model, method in served]
    lines.append(f"playground: {base}/ (open it in a browser)")
    if host in WILDCARD:
        lines.append(
            f"listening on every address of this machine ({host or 'all'}:{port}); from another "
            f"machine use this machine's address in place of {shown}"
        )
    return lines


def check_url(option: str, url: str) -> None:
    """Refuse anything but an http(s) URL with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as err:
        raise SteerableError(f"{option} {url!r} is not a URL ({err}); give e.g. http://127.0.0.1:8001/v1")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SteerableError(f"{option} must be an http(s) URL such as http://127.0.0.1:8001/v1, got {url!r}")


@command
def export(
    model: Annotated[Path, typer.Argument(help="A RiC or MOSLIM model directory.")],
    out: Annotated[Path, typer.Argument(help="New directory for the merged Hugging Face model.")],
    dtype: Dtype = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Write the merged model (base + adapter) and tokenizer as a plain Hugging Face directory,
    what vLLM or `transformers serve` load; serve the steering in front of it with
    `steerable serve MODEL --upstream URL`."""
    import json
    import shutil

    from steerable.io import atomic_write_text
    from steerable.policy import SteerablePolicy, load_manifest
    from steerable.stages import EXPORT_RECORD

    manifest = load_manifest(model)
    if not methods.get(manifest.method).in_prompt:
        in_prompt = methods.names(lambda m: m.trainable and m.in_prompt)
        raise SteerableError(
            f"{model} holds a {manifest.method!r} model; export writes models steered through the prompt "
            f"({', '.join(in_prompt)})"
        )
    claim(out, {"MODEL": model}, directory=True, inside_inputs=False)  # no model inside the model
    if out.exists() and any(out.iterdir()):
        raise SteerableError(f"{out} exists and is not empty; choose a new directory")
    policy = SteerablePolicy.from_pretrained(model, dtype=dtype, trust_remote_code=trust_remote_code)
    # Written beside OUT, then renamed: a failed export leaves nothing. One killed mid-save
    # (SIGKILL: nothing runs) leaves this folder, which the next export into OUT removes: it
    # holds OUT's lock, so no live export is writing it.
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        policy.model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
        record = {
            "source": str(model.resolve()),
            "method": manifest.method,
            "base_model": manifest.base_model,
        }
        atomic_write_text(tmp / EXPORT_RECORD, json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(
        f"merged model: {out}\nserve it, e.g. `transformers serve {out}`, then `steerable serve {model} --upstream URL/v1`"
    )


if __name__ == "__main__":
    app()
