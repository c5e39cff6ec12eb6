#!/usr/bin/env bash
# Tables 3, 4 and 12 on the shared subsets of CelebA, SVHN and CIFAR-100 (../shared/data), with the
# features, label-free settings (",chosen") and 1,000-step schedule (",fast") of the ten-class
# Table 1 in benchmarks/results/oneclass_32px. Resumable: rerun it after an interruption.
#   benchmarks/results/tables_3_4_12/run.sh [FEATURES_ROOT] [WORK_ROOT]
# FEATURES_ROOT must hold benchmarks/make_features.sh's datasets (their PCA-128 too).
set -euo pipefail
R="${1:-$HOME/.cache/cnf_jax/features32}"
W="${2:-$HOME/.cache/cnf_jax/tables_3_4_12}"
PY="${PYTHON:-python}"
OUT="$(dirname "$0")"
PYTHON="$PY" benchmarks/make_table_features.sh "$R" ../shared/data 128 128

sweep() {  # sweep <config> <workdir> <methods> <report flags> [sweep flags]
  local config=$1 work=$2 methods=$3 report_flags=$4
  shift 4
  local start=$(date +%s)
  "$PY" -m cnf_jax.sweep --config="configs/$config.py" --workdir="$W/$work" --arg=chosen,fast --quiet \
    --set=data.features_root="$R" --set=methods="$methods" "$@"
  "$PY" -m cnf_jax.report --workdir="$W/$work" --out="$OUT/$work" --examples=0 $report_flags > /dev/null
  echo "{\"table\": \"$work\", \"methods\": \"$methods\", \"wall_s\": $(( $(date +%s) - start ))}" | tee -a "$OUT/wall.jsonl"
}

# Table 4: CIFAR-10 against CIFAR-100 / SVHN / CelebA, 3 seeds; the paper's six methods plus KNN (not KDE:
# sklearn's tree KDE over 45,000 inliers scored one seed's 26,000 rows in over 15 minutes here).
sweep dataset_vs_dataset table4 cf,flow,flow_ratio,oe,mse,mse_ratio,knn ""
# Table 3: CelebA female / male, 3 seeds; every method.
sweep celeba table3 cf,flow,flow_ratio,oe,mse,mse_ratio,kde,pca,knn,lof,abod,mcd ""
# Table 12: the 20 CIFAR-100 superclasses, seed 0 only (compute); flows and the classical baselines;
# the report without its 20 score histograms (3.4 MB).
sweep cifar100 table12 cf,flow,flow_ratio,kde,pca,knn,lof,abod,mcd --noplots --runs='*-seed=0'
