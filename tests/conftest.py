import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

from steerable.methods.ric.recipe import RiCConfig, train_ric  # noqa: E402


@pytest.fixture(autouse=True)
def steerable_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty STEERABLE_HOME: the py: scorers it runs are trusted there,
    never in the user's own trust store."""
    home = tmp_path_factory.mktemp("steerable_home")
    monkeypatch.setenv("STEERABLE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_path() -> str:
    """The tiny randomly initialised Llama with SmolLM2's tokenizer (built once, cached)."""
    from steerable.defaults import resolve_model

    return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_path, tmp_path_factory) -> str:
    """A tiny random sequence-classification reward model (2 logits) saved to a local dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    config = LlamaConfig.from_pretrained(tiny_path, num_labels=2)
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(config)
    out = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def tiny_ric_config(tiny_path: str, out, **overrides) -> RiCConfig:
    """A RiC configuration small enough for the tiny model to run in seconds."""
    settings = dict(
        model=tiny_path,
        output_dir=str(out),
        prompt_limit=8,
        samples_per_prompt=2,
        max_new_tokens=8,
        num_epochs=1,
        batch_size=4,
        lora_r=4,
        lora_alpha=8,
        online_iterations=0,
        objectives=["brief=builtin:brevity", "positive=builtin:sentiment"],
    )
    return RiCConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def make_tiny_ric_config(tiny_path):
    return lambda out, **overrides: tiny_ric_config(tiny_path, out, **overrides)


@pytest.fixture(scope="session")
def tiny_ric(tmp_path_factory, tiny_path):
    out = tmp_path_factory.mktemp("ric") / "model"
    config = tiny_ric_config(tiny_path, out, online_iterations=1, online_samples=8, online_quantile=0.5)
    train_ric(config)
    return config, out


# A Gemma-like chat template: no system role (a system message raises, as Gemma's does) and
# turns that end with <end_of_turn>, which is not the eos_token.
NOSYS_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_nosys_path(tiny_path, tmp_path_factory) -> str:
    """The tiny model as another family ships it: a chat template without a system role whose
    end of turn (<end_of_turn>, a special token of its own) is not eos_token (<|endoftext|>),
    and a tokenizer without a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.pad_token = None
    tokenizer.chat_template = NOSYS_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    torch.manual_seed(2)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    for config in (model.config, model.generation_config):
        config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, None
    out = tmp_path_factory.mktemp("tiny_nosys")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_reward_model_no_pad(tiny_reward_model, tmp_path_factory) -> str:
    """The tiny reward model with a tokenizer that has no pad token and a chat template whose
    turns end with eos_token and nothing after it (as Llama 3's end with <|eot_id|>), so the
    last real token of a chat input is EOS."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    tokenizer.pad_token = None
    tokenizer.chat_template = (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token }}"
        "{% endfor %}"
    )
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model)
    model.config.pad_token_id = None
    out = tmp_path_factory.mktemp("tiny_rm_no_pad")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def scored_table(tmp_path_factory):
    """A `steerable score` output with the default objectives (brevity against a sentiment that
    varies by response) and its stats.json beside it: 24 prompts, 4 responses each."""
    import json

    import numpy as np

    from steerable.objectives import RewardSet

    folder = tmp_path_factory.mktemp("scored")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(24):
        for r in range(4):
            words = int(rng.integers(1, 12))
            mood = ["great", "awful"][(p + r) % 2]
            rows.append(
                {"prompt": f"Tell me about topic {p}.", "response": " ".join([mood] * words) + f" {r}."}
            )
    rewards = RewardSet.from_specs(["brief=builtin:brevity", "positive=builtin:sentiment"])
    rewards.annotate(rows, fit=True)
    data = folder / "scored.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rewards.save(folder / "stats.json")
    return data


def write_experts(tiny_path, scored_table, out, method="soups", seeds=(1, 2)):
    """A directory of `method` with one random LoRA adapter per objective (non-zero, so each
    expert answers differently from the base and from the other)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerable.manifest import PolicyManifest, write_model_directory

    rewards = json.loads((scored_table.parent / "stats.json").read_text())
    policies = []
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_path)
        # dropout as trained experts have it: a mixture must run every adapter (merged ones too) in eval mode
        config = LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj", "up_proj"]
        )
        model = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.3)
        model.save_pretrained(out / f"policies/{k}")
        policies.append(
            {"adapter": f"policies/{k}", "weights": [1.0 if j == k else 0.0 for j in range(len(seeds))]}
        )
    manifest = PolicyManifest(method=method, base_model=tiny_path, rewards=rewards, policies=policies)
    return write_model_directory(out, manifest, AutoTokenizer.from_pretrained(tiny_path))


@pytest.fixture(scope="session")
def tiny_experts(tiny_path, scored_table, tmp_path_factory):
    """A soups directory of two hand-made experts of the tiny model (random non-zero LoRA
    adapters, one per default objective): what mod, lora-mix and soups all read."""
    return write_experts(tiny_path, scored_table, tmp_path_factory.mktemp("experts") / "experts")


@pytest.fixture(scope="session")
def tiny_genarm(tiny_path, scored_table, tmp_path_factory):
    """A genarm directory of two hand-made reward models of the tiny model (as `tiny_experts`)."""
    return write_experts(
        tiny_path, scored_table, tmp_path_factory.mktemp("genarm") / "genarm", "genarm", (3, 4)
    )


# --- serving: a module's `server` fixture yields (running server, what it serves) ---------------


@pytest.fixture(scope="module")
def client(server):
    """An OpenAI client of the module's running server."""
    import openai

    running, _ = server
    return openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def ask(client):
    """`ask(model, steering=None, via=None, **settings)`: one chat completion of "Tell me about
    cats." from the module's server (or the client `via`), 8 greedy tokens unless `settings` say
    otherwise, steered by `steering`."""

    def chat(model, steering=None, via=None, **kwargs):
        settings = {"max_tokens": 8, "temperature": 0, **kwargs}
        return (via or client).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Tell me about cats."}],
            extra_body={"steering": steering} if steering is not None else None,
            **settings,
        )

    return chat


@pytest.fixture(scope="session")
def tiny_compare_ric() -> str:
    """The ric: section of a tiny comparison's YAML: RiC on the tiny model in seconds."""
    return """ric:
  prompt_limit: 6
  samples_per_prompt: 2
  max_new_tokens: 6
  num_epochs: 1
  batch_size: 4
  lora_r: 4
  lora_alpha: 8
  online_samples: 8
  online_quantile: 0.5
  objectives: [brief=builtin:brevity, positive=builtin:sentiment]"""
