#!/bin/sh
# Engine families side by side: each engine's adaptive speculation tuned on the same profile and the same
# Azure traces (conv and code), at several loads (`specsim compare-engines`). The traces are read from the
# shared data folder and converted to a cache outside the repository; nothing of them is committed.
#
#   sh experiments/engine_families/run.sh            # about 10 minutes on 2 cores
#
# Profile: analytic Llama-3.1-8B on one H100 (calibrated roofline), with the n-gram drafter, a 1B draft
# model and an EAGLE-style head; acceptance i.i.d. per drafter (the analytic defaults).
set -eu
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${SPECSIM_SHARED_DATA:-../shared/data}/traces
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/specsim/experiments/engine_families
OUT=experiments/engine_families/results
TRIALS=${TRIALS:-40}
mkdir -p "$CACHE" "$OUT"
if [ ! -f "$DATA/AzureLLMInferenceTrace_conv.csv" ]; then
    echo "engine_families: no Azure traces under $DATA; nothing to run" >&2
    exit 0
fi
$PY -m specsim profile-analytic --target llama-3.1-8b --drafter llama-3.2-1b --gpu h100 --eagle \
    --out "$CACHE/profile.json"
for kind in conv code; do
    $PY -m specsim traffic import "$DATA/AzureLLMInferenceTrace_$kind.csv" --out "$CACHE/$kind.jsonl"
    # 20 minutes of the trace; loads x1, x4 and x12 of its own rate (light to past the crossover)
    $PY -m specsim compare-engines --profile "$CACHE/profile.json" --traffic "$CACHE/$kind.jsonl" \
        --window 0:1200 --scales 1,4,12 --trials "$TRIALS" --objective mean-tpot --seed 1 \
        --out "$OUT/$kind"
done
