#!/usr/bin/env bash
# Table 1 (all twelve methods, the ten CIFAR-10 classes x seeds 0-2) and Table 2 for CF on one
# feature set, with the label-free settings and the fast schedule (configs/oneclass.py's words
# `chosen,fast`): one sweep of the four flow methods (OE fine-tunes the Flow model of its own
# run), one of the eight baselines, then one report over both.
#   benchmarks/results/table1/run.sh [ROOT] [WORK] [FEATURES] [OUT]
#     ROOT      feature datasets (benchmarks/make_features.sh + the PCA; default ~/.cache/cnf_jax/features32)
#     WORK      sweep roots go to WORK/FEATURES/{flows,baselines} (default ~/.cache/cnf_jax/table1)
#     FEATURES  data.backbone, e.g. effnet_lite0_pca128 (default), effnet_lite2_pca256
#     OUT       report folder (default: this folder's FEATURES/)
#   METHODS_FLOWS / METHODS_BASELINES (env) narrow the columns; RUNS (env) the runs (sweep --runs);
#   SETS (env, space-separated KEY=VALUE) extra config settings for every run, e.g.
#   SETS="objective.oe_margin=1280" (OE's margin re-chosen for 1,280-d raw features).
# Interrupted? Run it again: finished runs are skipped, unfinished ones resume from checkpoints.
set -euo pipefail
R="${1:-$HOME/.cache/cnf_jax/features32}"
W="${2:-$HOME/.cache/cnf_jax/table1}"
F="${3:-effnet_lite0_pca128}"
OUT="${4:-$(dirname "$0")/$F}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
sweep() {  # sweep <subdir> <methods>
  local start
  start=$(date +%s)
  "$PY" -m cnf_jax.sweep --config=configs/oneclass.py --workdir="$W/$F/$1" --arg=chosen,fast --quiet \
    --set=data.features_root="$R" --set=data.backbone="$F" --set=methods="$2" ${RUNS:+--runs="$RUNS"} \
    $(for kv in ${SETS:-}; do printf -- '--set=%s ' "$kv"; done)
  echo "{\"features\": \"$F\", \"sweep\": \"$1\", \"methods\": \"$2\", \"runs\": \"${RUNS:-all}\", \"sets\": \"${SETS:-}\", \"wall_s\": $(( $(date +%s) - start ))}" \
    | tee -a "$OUT/wall.jsonl"
}
sweep flows "${METHODS_FLOWS:-cf,flow,flow_ratio,oe}"
sweep baselines "${METHODS_BASELINES:-mse,mse_ratio,kde,pca,knn,lof,abod,mcd}"
"$PY" -m cnf_jax.report --workdir="$W/$F/flows" --also="$W/$F/baselines" --config=configs/oneclass.py --out="$OUT"
