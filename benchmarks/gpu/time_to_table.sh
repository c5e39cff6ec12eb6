# Issue 15's GPU targets and issue 14's flow columns in one device call, then the test suite:
#   python benchmarks/gpu/pack_features.py pack --root=~/.cache/cnf_jax/features32 --backbone=effnet_lite0_pca128 \
#       --datasets=cifar10-train,cifar10-test,tiny_imagenet-train --float16=tiny_imagenet-train,cifar10-train \
#       --out=.carry/features.npz
#   run(command="bash benchmarks/gpu/time_to_table.sh", carry=[".whl", ".carry"], timeout_s=600)
# Phase A, alone on the GPU, each timed by benchmarks/time_to_table.py (a sweep process, then a
# report process): CF's column of Table 1 with the fast schedule (configs/oneclass.py:<class>,
# chosen,fast; target: under 60 s), the four flow methods with it (target: under 3 minutes),
# then CF's column with 3,000 steps as the reference of both. Phase B: the whole test suite in
# what time is left (results stream as they come). The features travel float16 (the
# in-distribution sets too, to fit 64 MiB with the wheels; EfficientNet-Lite0's weight wheel
# stays behind, so its one parity test cannot run).
# 2026-12-04, first call (before feature_dataset.load_cached): every phase timed out, most of it
# reading the datasets once per run; benchmarks/results/time_to_table/README.md.
set -u
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
W=/tmp/ttt
J=$OUT/time_to_table.jsonl
ttt() {  # label, time limit (s), time_to_table arguments...
  local label=$1 limit=$2; shift 2
  timeout $limit python3 benchmarks/time_to_table.py --workdir=$W/$label --features_root=/tmp/features "$@" \
    > $W.$label.out 2> $W.$label.err
  echo "{\"phase\": \"$label\", \"rc\": $?, \"at_s\": $SECONDS}" >> $J
  tag "{\"phase\": \"$label\"}" < $W.$label.out >> $J
  tail -3 $W.$label.err
  tail -1 $J
}
mkdir -p $W
echo "{\"setup_done_s\": $SECONDS}" >> $J
# The checkpoint round (16.4 s for 30 models serially on this machine, 2026-12-04): serial vs threads.
timeout 90 python3 benchmarks/checkpoint_throughput.py --models=30 --threads=1,4,8,16 --rounds=1 2>/dev/null \
  | tag '{"phase": "checkpoint_round"}' >> $J
ttt cf_fast 120 --arg=chosen,fast
ttt flows4_fast 240 --arg=chosen,fast --methods=cf,flow,flow_ratio,oe
ttt cf_3000 200 --arg=chosen
python3 benchmarks/time_to_table.py --workdir=$W/cf_fast --existing --reference=$W/cf_3000 2>/dev/null \
  | tag '{"phase": "cf_fast_vs_3000"}' >> $J
tar czf $OUT/ttt_runs.tgz --exclude=checkpoints --exclude='events.*' -C /tmp ttt $(cd /tmp && ls ttt.* 2>/dev/null)
# Phase B: the test suite (as benchmarks/gpu/tests.sh) until 575 s.
LIMIT=$(( 575 - SECONDS ))
echo "{\"tests_limit_s\": $LIMIT}" | tee -a $J
export XLA_PYTHON_CLIENT_PREALLOCATE=false
[ $LIMIT -gt 30 ] && timeout $LIMIT python3 -m pytest tests -v -n 16 --dist load -p no:cacheprovider --timeout=200 \
  --tb=short --junitxml=$OUT/junit.xml > $OUT/pytest.log 2>&1
echo "{\"pytest_rc\": $?, \"total_s\": $SECONDS}" | tee -a $J
grep -E "FAILED|ERROR|passed|failed" $OUT/pytest.log | tail -40
grep -c PASSED $OUT/pytest.log
