#!/usr/bin/env bash
# Builds the real feature datasets of the one-class benchmarks with EfficientNet-Lite0:
#   CIFAR-10 train + test (in-distribution / test data) and the Tiny ImageNet subset
#   (train, the contrastive data), from the JPEG zips in ../shared/data.
#
# Usage (from the repository root, with the extract extra installed):
#   benchmarks/make_features.sh [ROOT] [DATA_DIR] [RESOLUTION]
#     ROOT        where the datasets go   (default ~/.cache/cnf_jax/features; keep it outside the repo)
#     DATA_DIR    folder with the zips    (default ../shared/data)
#     RESOLUTION  backbone input pixels   (default 128; the paper upsamples to 224, 4x slower here)
#     BACKBONE    env: the extractor's backbone (default effnet_lite0; effnet_lite1, effnet_lite2, ...)
#     EXTRA       env: more extractor flags for every dataset (e.g. --flip_average; --overwrite)
#     BOTTLENECK  env: pixels the Tiny ImageNet images pass through first (default 32, the CIFAR
#                 inliers' own size, with a JPEG q75 round trip like the CIFAR zip's; 0: none).
#                 The paper shrinks its contrastive ImageNet images to 32 x 32 the same way; the
#                 one-class configs refuse contrastive features of another resolution.
#
# It writes ROOT/{cifar10-train,cifar10-test,tiny_imagenet-train}-<BACKBONE>, the names
# cnf_jax.data.feature_dataset.dataset_dir(ROOT, source, split, 'effnet_lite0') gives, which
# the one-class configs read. Each run prints a JSON line (images, seconds, images_per_s);
# they are collected in ROOT/make_features.log. Interrupted? Run it again: finished shards are
# kept, finished datasets are skipped. Add --overwrite to EXTRA to rebuild.
set -euo pipefail

ROOT="${1:-$HOME/.cache/cnf_jax/features}"
DATA="${2:-../shared/data}"
RES="${3:-128}"
PY="${PYTHON:-python}"
EXTRA="${EXTRA:-}"
BOTTLENECK="${BOTTLENECK:-32}"
BACKBONE="${BACKBONE:-effnet_lite0}"
mkdir -p "$ROOT"
LOG="$ROOT/make_features.log"

source "$(dirname "$0")/features_lib.sh"

total_start=$(date +%s)
extract_one cifar10 cifar10-jpeg.zip test
extract_one cifar10 cifar10-jpeg.zip train
extract_one tiny_imagenet tiny-imagenet-200-subset-jpeg.zip train --bottleneck="$BOTTLENECK" --bottleneck_jpeg_quality=75
echo "{\"total_wall_s\": $(( $(date +%s) - total_start )), \"root\": \"$ROOT\", \"backbone\": \"$BACKBONE\", \"resolution\": $RES, \"bottleneck\": $BOTTLENECK}" | tee -a "$LOG"
