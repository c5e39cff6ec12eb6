"""Packs feature datasets into one .npz that fits the device tool's 64 MiB transfer, and back.

  # here: three datasets -> one file (Tiny ImageNet rounded to float16 to fit)
  python benchmarks/gpu/pack_features.py pack --root=~/.cache/cnf_jax/features --backbone=effnet_lite0_pca128 \
      --datasets=cifar10-train,cifar10-test,tiny_imagenet-train --float16=tiny_imagenet-train --out=.carry/features.npz
  # on the GPU machine: the file -> feature datasets under --root, readable by every config
  python benchmarks/gpu/pack_features.py unpack --npz=.carry/features.npz --root=/tmp/features

Why float16 for one set: CIFAR-10 train + test + Tiny ImageNet in float32 are 56 MB, and the
transfer limit (64 MiB) also carries the code and the wheels. The contrastive set is the one
rounded: a relative error of 2^-11 (about 5e-4 on unit vectors), 40 times below the N(0, 0.02^2)
noise that training adds to every contrastive vector. The in-distribution sets stay float32.
"""
import json
import os
from typing import Sequence

import numpy as np
from absl import flags

from cnf_jax import cli
from cnf_jax.data import feature_dataset
from cnf_jax.errors import UserInputError
from cnf_jax.files import atomic_write

REQUIRED = {"pack": ("root", "backbone", "datasets", "out"), "unpack": ("npz", "root")}


def pack(args: flags.FlagValues) -> None:
  root = os.path.expanduser(args.root)
  half = set(args.float16)
  arrays, meta = {}, {}
  for name in args.datasets:
    source, split = name.rsplit("-", 1)
    fs = feature_dataset.load(feature_dataset.dataset_dir(root, source, split, args.backbone))
    arrays[f"{name}/features"] = fs.features.astype(np.float16 if name in half else np.float32)
    arrays[f"{name}/labels"] = fs.labels.astype(np.int32)
    arrays[f"{name}/index"] = fs.index.astype(np.int32)
    keep = {k: v for k, v in fs.metadata.items() if k not in ("shards", "num_shards", "num_examples", "dim")}
    meta[name] = dict(keep, source=source, split=split, packed_float16=name in half)
  arrays["metadata_json"] = np.frombuffer(json.dumps({"backbone": args.backbone, "sets": meta}).encode(), np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with atomic_write(args.out, "wb") as f:
    np.savez(f, **arrays)
  print(json.dumps({"out": args.out, "bytes": os.path.getsize(args.out)}))


def unpack(args: flags.FlagValues) -> None:
  with np.load(args.npz) as f:
    info = json.loads(bytes(f["metadata_json"]).decode())
    for name, meta in info["sets"].items():
      path = feature_dataset.dataset_dir(os.path.expanduser(args.root), meta["source"], meta["split"], info["backbone"])
      if os.path.isdir(path):
        continue
      feature_dataset.write(path, f[f"{name}/features"].astype(np.float32), f[f"{name}/labels"], f[f"{name}/index"],
                            metadata={k: v for k, v in meta.items() if k != "attribute_names"}, split=meta["split"])
      print(json.dumps({"wrote": path, "rows": int(len(f[f"{name}/labels"]))}))


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("root", None, "the feature root: read from (pack) or written to (unpack)", flag_values=fv)
  flags.DEFINE_string("backbone", None, "pack: the datasets' backbone name", flag_values=fv)
  flags.DEFINE_list("datasets", [], "pack: <source>-<split>, comma-separated", flag_values=fv)
  flags.DEFINE_list("float16", [], "pack: datasets stored as float16", flag_values=fv)
  flags.DEFINE_string("out", None, "pack: the .npz to write", flag_values=fv)
  flags.DEFINE_string("npz", None, "unpack: the .npz to read", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, positional = cli.parse(define_flags, argv, __doc__, max_positional=1)
  command = positional[0] if positional else ""
  if command not in REQUIRED:
    raise UserInputError(f"the first argument is the command, pack or unpack (got {command or 'none'})")
  cli.check_required(args, REQUIRED[command])
  {"pack": pack, "unpack": unpack}[command](args)
  return 0


if __name__ == "__main__":
  cli.run(main)
