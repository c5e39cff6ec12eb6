#!/usr/bin/env bash
# Builds the feature datasets of Tables 3, 4 and 12 from the shared subsets, with the backbone and
# resolution of benchmarks/make_features.sh (run that first: the PCA is fitted on its Tiny ImageNet).
#   cifar100-{train,test}   ../shared/data/cifar100-subset-jpeg.zip (coarse labels from its fine_to_coarse.csv)
#   svhn_cropped-test       ../shared/data/svhn-test10k-jpeg.zip
#   celeb_a-{train,test}    ../shared/data/celeba-subset6000-jpeg.zip, through 32 px (JPEG q75) like
#                           Tiny ImageNet, so that every set reaches the backbone at CIFAR's resolution
# each under the names the configs read (configs/cifar100.py, celeba.py, dataset_vs_dataset.py),
# then projects them with the PCA-<DIMS> fitted on ROOT's Tiny ImageNet features.
#
# Usage (from the repository root, with the extract extra installed):
#   benchmarks/make_table_features.sh [ROOT] [DATA_DIR] [RESOLUTION] [DIMS]
# The sets are SUBSETS of the real datasets (see ../shared/data/README.md): say so next to any
# number made from them. Interrupted? Run it again: finished datasets are skipped.
set -euo pipefail

ROOT="${1:-$HOME/.cache/cnf_jax/features}"
DATA="${2:-../shared/data}"
RES="${3:-128}"
DIMS="${4:-128}"
PY="${PYTHON:-python}"
LOG="$ROOT/make_table_features.log"
mkdir -p "$ROOT"

run() {  # run <source name> <zip> <split> [extractor flags]
  local name=$1 zip=$2 split=$3
  shift 3
  local out="$ROOT/$name-$split-effnet_lite0"
  echo "== $name $split -> $out" >&2
  "$PY" -m cnf_jax.extract --source="$DATA/$zip" --split="$split" --source_name="$name" \
    --backbone=effnet_lite0 --resolution="$RES" --batch_size=64 --out="$out" --no_progress "$@" \
    | tail -n 1 | tee -a "$LOG"
}

start=$(date +%s)
run cifar100 cifar100-subset-jpeg.zip train
run cifar100 cifar100-subset-jpeg.zip test
run svhn_cropped svhn-test10k-jpeg.zip test
run celeb_a celeba-subset6000-jpeg.zip train --bottleneck=32 --bottleneck_jpeg_quality=75
run celeb_a celeba-subset6000-jpeg.zip test --bottleneck=32 --bottleneck_jpeg_quality=75
APPLY=""
for d in cifar100-train cifar100-test svhn_cropped-test celeb_a-train celeb_a-test; do
  APPLY="$APPLY${APPLY:+,}$ROOT/$d-effnet_lite0"
done
"$PY" -m cnf_jax.extract.pca --fit="$ROOT/tiny_imagenet-train-effnet_lite0" --dims="$DIMS" --apply="$APPLY" \
  | tail -n 1 | tee -a "$LOG"
echo "{\"total_wall_s\": $(( $(date +%s) - start )), \"root\": \"$ROOT\", \"resolution\": $RES, \"dims\": $DIMS}" | tee -a "$LOG"
