# The bfloat16 conditioner (bf16_dense, custom VJP) on the GPU: its tests, and train speed
# against float32 at 512 and 8192 vectors per step (cnf_jax only, JAX default precision):
#   run(command="bash benchmarks/gpu/bf16_check.sh", carry=[".whl"], timeout_s=200)
# 2026-11-28: 151 s; figures in benchmarks/README.md (GPU section).
set -u
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
J=$OUT/bf16_gpu.jsonl
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_flows.py -k "bfloat16 or dense or row_major" 2>&1 | tail -2
for b in 256 4096; do
  for d in float32 bfloat16; do
    timeout 30 python3 benchmarks/train_throughput.py --batch=$b --steps=50 --rounds=2 --warmup=5 --dtype=$d \
      --impl=cnf_jax 2>&1 | tag "{\"bench\": \"train\", \"batch\": $((2 * b))}" >> $J
  done
done
cat $J
