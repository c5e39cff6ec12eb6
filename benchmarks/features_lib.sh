# Sourced by benchmarks/make_features.sh and benchmarks/make_table_features.sh: one extractor
# call per dataset, under the names the configs read. Set ROOT, DATA, RES, PY, BACKBONE, EXTRA
# and LOG first.

# extract_one <source name> <zip in DATA> <split> [extractor flags]
#   -> ROOT/<source name>-<split>-<BACKBONE> (cnf_jax.data.feature_dataset.dataset_dir's name);
#   its JSON summary line (images, seconds, images_per_s) is appended to LOG.
extract_one() {
  local name=$1 zip=$2 split=$3
  shift 3
  local out="$ROOT/$name-$split-$BACKBONE"
  echo "== $name $split -> $out" >&2
  local start
  start=$(date +%s)
  "$PY" -m cnf_jax.extract --source="$DATA/$zip" --split="$split" --source_name="$name" \
    --backbone="$BACKBONE" --resolution="$RES" --batch_size=64 --out="$out" "$@" $EXTRA \
    | tail -n 1 | tee -a "$LOG"
  echo "   wall $(( $(date +%s) - start )) s" >&2
}
