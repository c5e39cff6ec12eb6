#!/usr/bin/env bash
# Builds the feature datasets of Tables 3, 4 and 12 from the shared subsets, with the backbone and
# resolution of benchmarks/make_features.sh (run that first, with the same BACKBONE: the PCA is
# fitted on its Tiny ImageNet). BACKBONE and EXTRA: env, as there (default effnet_lite0).
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
BACKBONE="${BACKBONE:-effnet_lite0}"
EXTRA="${EXTRA:-}"
LOG="$ROOT/make_table_features.log"
mkdir -p "$ROOT"

source "$(dirname "$0")/features_lib.sh"

start=$(date +%s)
extract_one cifar100 cifar100-subset-jpeg.zip train --no_progress
extract_one cifar100 cifar100-subset-jpeg.zip test --no_progress
extract_one svhn_cropped svhn-test10k-jpeg.zip test --no_progress
extract_one celeb_a celeba-subset6000-jpeg.zip train --bottleneck=32 --bottleneck_jpeg_quality=75 --no_progress
extract_one celeb_a celeba-subset6000-jpeg.zip test --bottleneck=32 --bottleneck_jpeg_quality=75 --no_progress
APPLY=""
for d in cifar100-train cifar100-test svhn_cropped-test celeb_a-train celeb_a-test; do
  APPLY="$APPLY${APPLY:+,}$ROOT/$d-$BACKBONE"
done
"$PY" -m cnf_jax.extract.pca --fit="$ROOT/tiny_imagenet-train-$BACKBONE" --dims="$DIMS" --apply="$APPLY" \
  | tail -n 1 | tee -a "$LOG"
echo "{\"total_wall_s\": $(( $(date +%s) - start )), \"root\": \"$ROOT\", \"backbone\": \"$BACKBONE\", \"resolution\": $RES, \"dims\": $DIMS}" | tee -a "$LOG"
