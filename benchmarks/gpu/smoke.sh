# First device call of a session: install, import, one real run, two quick train benchmarks.
#   run(command="bash benchmarks/gpu/smoke.sh", carry=[".whl", ".carry"], timeout_s=170)
set -u
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import orbax.checkpoint as o, flax, jax; print('orbax', o.__version__ if hasattr(o,'__version__') else '?')"
timeout 90 python3 -m cnf_jax.main --config=configs/oneclass.py:deer,runlocal \
  --config.data.features_root=/tmp/features --workdir=/tmp/w/deer_local 2>&1 | tail -4
ls /tmp/w/deer_local
for b in 256 4096; do
  timeout 45 python3 benchmarks/train_throughput.py --batch=$b --steps=50 --rounds=2 --warmup=5 2>&1 | grep '^{' | tee -a $OUT/smoke.jsonl
done
