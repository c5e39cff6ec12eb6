# Sourced at the start of every device command: installs the carried wheels (packages the GPU
# image lacks: ml-collections, distrax + tfp-nightly, tensorflow-datasets and its small deps,
# FrEIA) into /tmp/site, puts them and this checkout on PYTHONPATH, and unpacks the carried
# features into /tmp/features. The image's own jax / flax / optax / torch are used as they are.
# Defines tag JSON: a filter that keeps the JSON lines of its input, each merged with JSON
# (e.g. `... | tag '{"bench": "train"}' >> $OUT/x.jsonl`).
tag() { python3 -c "import json,sys; [print(json.dumps(dict(json.loads(l), **json.loads(sys.argv[1])))) for l in sys.stdin if l.startswith('{')]" "$1"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
python3 - <<'PY' || return 1
import importlib, jax
mods = ["jax", "jaxlib", "flax", "optax", "chex", "orbax.checkpoint", "distrax", "ml_collections",
        "tensorflow_datasets", "FrEIA", "torch", "sklearn", "numpy"]
print({m: getattr(importlib.import_module(m), "__version__", "?") for m in mods})
print("devices:", jax.devices())
PY
[ -f .carry/features.npz ] && python3 benchmarks/gpu/pack_features.py unpack --npz=.carry/features.npz --root=/tmp/features
return 0
