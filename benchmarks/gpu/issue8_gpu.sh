# Issue 8's GPU figures in one device call (see benchmarks/README.md, "GPU"):
#   run(command="bash benchmarks/gpu/issue8_gpu.sh", carry=[".whl", ".carry"])
# Writes $OUT/issue8_gpu.jsonl (one JSON line per figure) and $OUT/issue8_gpu.log.
set -u
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
J=$OUT/issue8_gpu.jsonl
# A real run end to end first (deer, runlocal) so that a broken install shows at once.
timeout 120 python3 -m cnf_jax.main --config=configs/oneclass.py:deer,runlocal \
  --config.data.features_root=/tmp/features --workdir=/tmp/w/deer_local 2>&1 | tail -3
for prec in default highest; do
  for b in 256 4096; do
    JAX_DEFAULT_MATMUL_PRECISION=$prec timeout 150 python3 benchmarks/train_throughput.py --batch=$b --steps=100 \
      --rounds=3 --warmup=5 2>&1 | tee -a $OUT/issue8_gpu.log | tag "{\"bench\": \"train\", \"batch\": $b, \"jax_precision\": \"$prec\"}" >> $J
  done
done
timeout 100 python3 benchmarks/train_throughput.py --batch=256 --steps=300 --rounds=3 --steps_per_call=10 --impl=cnf_jax \
  2>&1 | tee -a $OUT/issue8_gpu.log | tag '{"bench": "train", "batch": 256, "steps_per_call": 10}' >> $J
timeout 100 python3 benchmarks/train_throughput.py --batch=4096 --steps=100 --rounds=3 --dtype=bfloat16 --impl=cnf_jax \
  2>&1 | tee -a $OUT/issue8_gpu.log | tag '{"bench": "train", "batch": 4096, "dtype": "bfloat16"}' >> $J
for prec in default highest; do
  JAX_DEFAULT_MATMUL_PRECISION=$prec timeout 100 python3 benchmarks/score_throughput.py --num=1048576 --chunk=65536 \
    2>&1 | tee -a $OUT/issue8_gpu.log | tag "{\"bench\": \"score\", \"jax_precision\": \"$prec\"}" >> $J
done
timeout 60 python3 benchmarks/matmul_peak.py --n=8192 2>&1 | tee -a $OUT/issue8_gpu.log | tag '{"bench": "matmul_peak"}' >> $J
cat $J
