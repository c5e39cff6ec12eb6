#!/usr/bin/env bash
# Issue 14, part 3: feature sets compared on the baselines and Flow, four classes, seed 0, the
# label-free settings and the fast schedule (as the ten-class table). Each argument is a feature
# set as configs/oneclass.py's data.backbone names it: effnet_lite2_pca128 (a backbone, then the
# PCA fitted on its Tiny ImageNet), effnet_lite0_pca64, or effnet_lite0 (the raw 1280-d features).
# Build them under ROOT: BACKBONE=<b> benchmarks/make_features.sh ROOT ../shared/data 128, then
# python -m cnf_jax.extract.pca --fit=ROOT/tiny_imagenet-train-<b> --dims=<d> --apply=... (see
# benchmarks/make_features.sh's header).
#   benchmarks/results/backbones/run.sh [ROOT] [WORK] [feature sets...]
set -euo pipefail
R="${1:-$HOME/.cache/cnf_jax/features32}"
W="${2:-$HOME/.cache/cnf_jax/backbones}"
shift 2 || true
FEATURES="${*:-effnet_lite0_pca128 effnet_lite1_pca128}"
PY="${PYTHON:-python}"
OUT="$(dirname "$0")"
SETS=""
for f in $FEATURES; do
  start=$(date +%s)
  "$PY" -m cnf_jax.sweep --config=configs/oneclass.py --workdir="$W/$f" --arg=chosen,fast --quiet \
    --set=data.features_root="$R" --set=data.backbone="$f" --set=methods=flow,kde,knn,lof,pca \
    --runs='airplane-seed=0,cat-seed=0,deer-seed=0,ship-seed=0'
  echo "{\"features\": \"$f\", \"wall_s\": $(( $(date +%s) - start ))}" | tee -a "$OUT/wall.jsonl"
  SETS="$SETS $f=$W/$f"
done
"$PY" benchmarks/backbone_table.py $SETS --out="$OUT/table.md"
