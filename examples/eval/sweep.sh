#!/usr/bin/env bash
# Run the planner sweep of some recipes, then the paper-style table and accuracy-vs-NFE plot.
#
#   examples/eval/sweep.sh                       # LLaDA GSM8K and MATH500, DUS vs confidence top-k
#   RECIPES="dream/gsm8k llada/humaneval" VARIANTS="dus,conf-topk,one-per-call" examples/eval/sweep.sh
#
# Each command loads the model once; --run executes the variants one after the other. For several
# GPUs, print the commands instead (unmask eval --recipe NAME) and prefix them with
#   accelerate launch --multi_gpu --num_processes N -m unmask.cli.eval
set -euo pipefail
RECIPES=${RECIPES:-"llada/gsm8k llada/math500"}
VARIANTS=${VARIANTS:-"dus,conf-topk"}
OUT=${OUT:-runs/eval}
for recipe in $RECIPES; do
    unmask eval --recipe "$recipe" --variants "$VARIANTS" --output-root "$OUT" --run
done
unmask eval summarize "$OUT"
