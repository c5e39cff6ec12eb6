"""cnf_jax: anomaly detection with contrastive normalizing flows (JAX/Flax).

Layout:
  flows/        the flow maths: pure functions of arrays with thin Flax modules around them
  training/     objectives, the model plan, the one compiled training loop, checkpoints
  evaluation/   metrics, the classical baselines, conformal p-values
  data/         feature datasets, samplers, preprocessing
  tasks/        what each experiment loads and analyses (toy, oneclass, tabular, npz, ...)
  experiments/  configs, one run (train, score, write), vmapped sweeps
  reports/      tables and plots of finished sweeps
  extract/      the PyTorch feature extractor stage (needs the [extract] extra)
  main, sweep, score, report: the command-line programs (python -m cnf_jax.<name>)
  detector:     ContrastiveFlowDetector, the scikit-learn / PyOD style API, and select_detector
"""
__version__ = "0.1.0"


def __getattr__(name):
  # Lazy: `import cnf_jax` stays light (no jax, flax or sklearn) until the detector is used.
  if name in ("ContrastiveFlowDetector", "select_detector"):
    from cnf_jax import detector
    return getattr(detector, name)
  raise AttributeError(f"module 'cnf_jax' has no attribute {name!r}")
