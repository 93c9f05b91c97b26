#!/usr/bin/env bash
# Same seed, same step and epoch budgets: do the models depend on how busy the machine is? (issue 22)
#
#   bash benchmarks/busy_machine.sh runs/quickstart [OUT_PREFIX]     # ~10 minutes on 2 cores
#
# Copies RUN's prepared data and tokenizer twice (OUT_PREFIX-idle, OUT_PREFIX-loaded; default runs/busy), trains
# SASRec (3 epochs) and the hybrid generator (300 steps, validation every 100 on 500 users) in each, the second
# time beside one `while True: pass` process per core, then evaluates both on 3,000 TEST users. Prints the
# wall times, whether every saved tensor is equal and whether the metrics are identical. Budgets in steps and
# epochs make the model independent of the load; minutes are only a cap (a busy machine takes longer).
set -euo pipefail
SRC=${1:?usage: busy_machine.sh RUN [OUT_PREFIX]}
OUT=${2:-runs/busy}
export TOKENIZERS_PARALLELISM=false
for mode in idle loaded; do
  R=$OUT-$mode
  rm -rf "$R"
  mkdir -p "$R/logs"
  cp -r "$SRC/dataset" "$SRC/tokenizer" "$R/"
  [ -d "$SRC/cache" ] && cp -r "$SRC/cache" "$R/"
  [ -f "$SRC/catalog.jsonl" ] && cp "$SRC/catalog.jsonl" "$R/"
  pids=()
  if [ "$mode" = loaded ]; then
    for _ in $(seq "$(nproc)"); do python -c "while True: pass" & pids+=($!); done
  fi
  t0=$(date +%s)
  sidrec sasrec --run "$R" --epochs 3 > "$R/logs/sasrec.log" 2>&1
  t1=$(date +%s)
  sidrec train --run "$R" --config generator/hybrid --max-steps 300 --eval-every 100 --save-every 100 \
    --valid-max-users 500 > "$R/logs/generator.log" 2>&1
  t2=$(date +%s)
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}"
  sidrec evaluate --run "$R" --split test --max-users 3000 --baselines sasrec --bootstrap 0 > "$R/logs/evaluate.log" 2>&1
  echo "$mode: SASRec $((t1 - t0)) s, generator $((t2 - t1)) s"
done
python - "$OUT" <<'PY'
import json
import sys

import torch
from safetensors.torch import load_file

out = sys.argv[1]
found = {}
for name, path in (("generator", "generator/model.safetensors"), ("sasrec", "baselines/sasrec/model.safetensors")):
    a, b = load_file(f"{out}-idle/{path}"), load_file(f"{out}-loaded/{path}")
    found[f"{name}_tensors_equal"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"{name}: {len(a)} tensors, all equal: {found[f'{name}_tensors_equal']}")
ma = json.load(open(f"{out}-idle/eval/metrics.json"))
mb = json.load(open(f"{out}-loaded/eval/metrics.json"))
for name, x, y in (("generator", ma["metrics"], mb["metrics"]),
                   ("sasrec", ma["baselines"]["sasrec"]["metrics"], mb["baselines"]["sasrec"]["metrics"])):
    found[f"{name}_metrics_identical"] = x == y
    print(f"{name}: identical metrics: {x == y} (Recall@10 {x['recall@10']:.4f}, NDCG@10 {x['ndcg@10']:.4f})")
print(" ".join(f"{k}={v}" for k, v in found.items()))
PY
