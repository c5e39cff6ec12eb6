# Where a vmapped sweep's time goes on the GPU (the loop's per-record seconds: host batches, device
# chunk, validation, checkpoints), for 30 runs of configs/oneclass.py:chosen (CF) against 1 run:
#   run(command="bash benchmarks/gpu/profile_sweep.sh", carry=[".whl", ".carry"], timeout_s=200)
# 2026-12-04: benchmarks/gpu/time_to_table.sh trained 30 CF runs at 4.3-4.9 steps/s on the H200,
# where one model alone trains at 423 steps/s (train_throughput.py): this says why.
set -u
source benchmarks/gpu/setup_device.sh > /dev/null || { echo "setup failed"; exit 1; }
S="--config=configs/oneclass.py --arg=chosen --quiet --set=data.features_root=/tmp/features --set=methods=cf
   --set=train.steps=300 --set=train.log_every=50 --set=train.checkpoint_every=150"
RUNS=$(python3 -c "from cnf_jax.tasks.oneclass import CIFAR10_CLASSES as C; print(','.join(f'{c}-seed={s}' for s in range(3) for c in C))")
for n in one thirty; do
  [ $n = one ] && runs=airplane-seed=0 || runs=$RUNS
  t0=$SECONDS
  timeout 150 python3 -m cnf_jax.sweep $S --workdir=/tmp/prof_$n --runs=$runs > $OUT/sweep_$n.log 2>&1
  echo "{\"models\": \"$n\", \"rc\": $?, \"seconds\": $(( SECONDS - t0 ))}"
  grep -h '"model"' /tmp/prof_$n/airplane-seed=0/metrics.jsonl | python3 -c "
import json,sys
for l in sys.stdin:
  r=json.loads(l); print(json.dumps({k: (round(v,3) if isinstance(v,float) else v) for k,v in r.items() if k in ('step','steps_per_s','host_batches_s','device_s','validation_s','checkpoint_s','vmapped_runs')}))"
done
