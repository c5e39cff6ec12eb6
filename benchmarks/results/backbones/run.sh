#!/usr/bin/env bash
# Issue 14, part 3: the feature sets compared on the baselines and Flow, four classes, seed 0,
# the label-free settings and the fast schedule (as the ten-class table). Needs each backbone's
# features under ROOT: BACKBONE=<b> benchmarks/make_features.sh ROOT ../shared/data 128, then the
# PCA-128 fitted on its Tiny ImageNet (see benchmarks/make_features.sh's header).
#   benchmarks/results/backbones/run.sh [ROOT] [WORK] [backbones...]
set -euo pipefail
R="${1:-$HOME/.cache/cnf_jax/features32}"
W="${2:-$HOME/.cache/cnf_jax/backbones}"
shift 2 || true
BACKBONES="${*:-effnet_lite0 effnet_lite1}"
PY="${PYTHON:-python}"
OUT="$(dirname "$0")"
SETS=""
for b in $BACKBONES; do
  start=$(date +%s)
  "$PY" -m cnf_jax.sweep --config=configs/oneclass.py --workdir="$W/$b" --arg=chosen,fast --quiet \
    --set=data.features_root="$R" --set=data.backbone="${b}_pca128" --set=methods=flow,kde,knn,lof,pca \
    --runs='airplane-seed=0,cat-seed=0,deer-seed=0,ship-seed=0'
  echo "{\"backbone\": \"$b\", \"wall_s\": $(( $(date +%s) - start ))}" | tee -a "$OUT/wall.jsonl"
  SETS="$SETS $b=$W/$b"
done
"$PY" benchmarks/backbone_table.py $SETS --out="$OUT/table.md"
