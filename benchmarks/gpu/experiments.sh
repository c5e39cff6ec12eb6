# The real-feature studies of issues 4 and 5 in one device call, then issue 8's GPU figures:
#   run(command="bash benchmarks/gpu/experiments.sh", carry=[".whl", ".carry"], timeout_s=600)
# Each study is a `python -m cnf_jax.sweep` (its runs trained as vmapped programs; Table 1 as one
# sweep per seed); the six run side by side on the one GPU (each process takes an eighth of its
# memory), each under its own time limit, and each study's workdirs (no checkpoints) come back as
# $OUT/<study>.tgz. The train-speed figures run last, alone on the GPU.
# 2026-11-28: with all six sweeps sharing the GPU, Table 1 took 246-268 s per seed and the three
# ablation sweeps did not finish inside 330 s. To finish only those, run e.g.
#   STUDIES="contamination narrow eps_ablation" LIMIT=480 bash benchmarks/gpu/experiments.sh
set -u
STUDIES=${STUDIES:-"oneclass contamination narrow eps_ablation"}
LIMIT=${LIMIT:-330}
want() { [[ " $STUDIES " == *" $1 "* ]]; }
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
S=/tmp/sweeps
COMMON="--set=data.features_root=/tmp/features --set=train.checkpoint_every=1000"
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.12
study() {  # label, sweep root (under $S), time limit (s), sweep arguments...
  local label=$1 root=$2 limit=$3; shift 3
  local t0=$(date +%s)
  timeout $limit python3 -m cnf_jax.sweep --workdir=$S/$root $COMMON "$@" > $S/$label.log 2>&1
  local rc=$?
  echo "{\"study\": \"$label\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" | tee -a $OUT/studies.jsonl
}
mkdir -p $S
# Table 1 as one sweep per seed (10 classes vmapped each), so that a time-out loses one seed, not all.
want oneclass && for seed in 0 1 2; do
  runs=$(python3 -c "import sys; from cnf_jax.tasks.oneclass import CIFAR10_CLASSES as C; print(','.join(f'{c}-seed={sys.argv[1]}' for c in C))" $seed)
  study oneclass_seed$seed oneclass $LIMIT --config=configs/oneclass.py --runs=$runs --set=methods=cf,flow,flow_ratio,oe &
done
want contamination && study contamination contamination $LIMIT --config=configs/contamination.py &
want narrow && study narrow narrow $LIMIT --config=configs/narrow.py &
want eps_ablation && study eps_ablation eps_ablation $LIMIT --config=configs/eps_ablation.py &
wait
# One file per seed: $OUT files come back only up to 16 MiB each (8 files at most, counted here:
# 3 + 3 + studies.jsonl + issue8_gpu.jsonl).
want oneclass && for seed in 0 1 2; do
  tar czf $OUT/oneclass_seed$seed.tgz --exclude=checkpoints -C $S oneclass_seed$seed.log \
    $(cd $S && ls -d oneclass/*-seed=$seed oneclass/sweep.json 2>/dev/null)
done
for root in contamination narrow eps_ablation; do
  want $root || continue
  tar czf $OUT/$root.tgz --exclude=checkpoints -C $S $root $root.log
done
unset XLA_PYTHON_CLIENT_MEM_FRACTION
J=$OUT/issue8_gpu.jsonl
for b in 256 4096; do
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 35 python3 benchmarks/train_throughput.py --batch=$b --steps=50 --rounds=2 \
    --warmup=5 2>&1 | tag "{\"bench\": \"train\", \"batch\": $b, \"jax_precision\": \"highest\"}" >> $J
done
timeout 25 python3 benchmarks/train_throughput.py --batch=4096 --steps=50 --rounds=2 --dtype=bfloat16 --impl=cnf_jax \
  2>&1 | tag '{"bench": "train", "batch": 4096, "dtype": "bfloat16"}' >> $J
timeout 25 python3 benchmarks/train_throughput.py --batch=256 --steps=200 --rounds=2 --steps_per_call=10 --impl=cnf_jax \
  2>&1 | tag '{"bench": "train", "batch": 256, "steps_per_call": 10}' >> $J
for prec in default highest; do
  JAX_DEFAULT_MATMUL_PRECISION=$prec timeout 30 python3 benchmarks/score_throughput.py --num=1048576 --chunk=65536 \
    2>&1 | tag "{\"bench\": \"score\", \"jax_precision\": \"$prec\"}" >> $J
done
timeout 30 python3 benchmarks/matmul_peak.py --n=8192 2>&1 | tag '{"bench": "matmul_peak"}' >> $J
cat $OUT/studies.jsonl $J
