# Issue 5's three image ablations at full size (3 seeds x 3,000 steps) in one device call, then
# issue 8's GPU scoring figures with whatever time is left:
#   run(command="bash benchmarks/gpu/ablations.sh", carry=[".whl", ".carry"], timeout_s=600)
# Each study runs as three `python -m cnf_jax.sweep` processes, one per seed (its runs vmapped),
# all nine side by side on the one GPU (a tenth of its memory each), so that a time-out costs
# the unfinished seeds and not whole studies. Each study's workdirs (no checkpoints) come back
# as $OUT/<study>.tgz; read them with `python -m cnf_jax.report --study=<study>`.
# Env: LIMIT (s, per sweep process, default 400), DEADLINE (s since the start of this script
# after which no benchmark is started, default 560).
set -u
LIMIT=${LIMIT:-400}
DEADLINE=${DEADLINE:-560}
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
echo "{\"setup_seconds\": $SECONDS}" | tee -a $OUT/studies.jsonl
S=/tmp/sweeps
mkdir -p $S
runs_of_seed() {  # config path, seed -> the sweep's run names of that seed, comma-separated
  python3 -c "
import sys
from cnf_jax.experiments import config_lib
path, seed = sys.argv[1:]
runs = config_lib.declared_sweep(config_lib.load_config_module(path), path)
print(','.join(r.name for r in runs if r.name.endswith('-seed=' + seed)))" "$1" "$2"
}
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.1
for study in contamination narrow eps_ablation; do
  for seed in 0 1 2; do
    (
      t0=$SECONDS
      timeout $LIMIT python3 -m cnf_jax.sweep --config=configs/$study.py --workdir=$S/$study \
        --runs=$(runs_of_seed configs/$study.py $seed) --set=data.features_root=/tmp/features \
        --set=train.checkpoint_every=1000 > $S/${study}_seed$seed.log 2>&1
      echo "{\"study\": \"$study\", \"seed\": $seed, \"rc\": $?, \"seconds\": $(( SECONDS - t0 ))}" \
        | tee -a $OUT/studies.jsonl
    ) &
  done
done
wait
unset XLA_PYTHON_CLIENT_MEM_FRACTION
# $OUT files come back only up to 16 MiB each: eps_ablation's 48 runs leave out scores.npz
# (its report reads results.json only).
tar czf $OUT/contamination.tgz --exclude=checkpoints -C $S contamination
tar czf $OUT/narrow.tgz --exclude=checkpoints -C $S narrow
tar czf $OUT/eps_ablation.tgz --exclude=checkpoints --exclude=scores.npz -C $S eps_ablation
tar czf $OUT/logs.tgz -C $S $(cd $S && ls *.log)
J=$OUT/issue8_gpu.jsonl
left() { echo $(( DEADLINE - SECONDS )); }
# Scoring, JAX against FrEIA on the GPU (the 1M-vector run of the last call did not finish in 30 s).
for prec in default highest; do
  [ $(left) -gt 40 ] || break
  JAX_DEFAULT_MATMUL_PRECISION=$prec timeout $(( $(left) < 80 ? $(left) : 80 )) python3 benchmarks/score_throughput.py \
    --num=262144 --chunk=65536 --rounds=3 2>&1 | tag "{\"bench\": \"score\", \"jax_precision\": \"$prec\"}" >> $J
done
# Training at full float32 matmul precision (JAX's GPU default lets XLA use TF32; torch's doesn't).
for b in 256 4096; do  # inliers per step (as many contrastive): total 512 and 8192
  [ $(left) -gt 40 ] || break
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout $(( $(left) < 60 ? $(left) : 60 )) python3 benchmarks/train_throughput.py \
    --batch=$b --steps=50 --rounds=2 --warmup=5 2>&1 | tag "{\"bench\": \"train\", \"batch\": $b, \"jax_precision\": \"highest\"}" >> $J
done
echo "{\"total_seconds\": $SECONDS}" >> $OUT/studies.jsonl
cat $OUT/studies.jsonl $J
