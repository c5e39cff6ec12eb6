"""python -m cnf_jax.extract --source=<src> --split=<split> --backbone=<name> --out=<dir> [...]

Example (CIFAR-10 test split from the JPEG zip, EfficientNet-Lite0 at 128 px):

  python -m cnf_jax.extract --source=../shared/data/cifar10-jpeg.zip --split=test \\
      --backbone=effnet_lite0 --resolution=128 \\
      --out=~/.cache/cnf_jax/features/cifar10-test-effnet_lite0

Progress goes to stderr; the last stdout line is JSON with images, seconds,
images_per_s. Bad input prints `error: ...` and exits with status 2; a finished
dataset at --out is left alone (exit 0) unless --overwrite.
"""
import argparse
import json
import os
import sys

from cnf_jax.errors import UserInputError

SOURCE_HELP = ("tfds:<name> (e.g. tfds:cifar10), npz:<path>, or a folder / .zip in the "
               "root/split/label/image layout")


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m cnf_jax.extract", description=__doc__.split("\n")[0])
  p.add_argument("--source", required=True, help=SOURCE_HELP)
  p.add_argument("--split", required=True, help="train, test, ... (the folder name for folders/zips)")
  p.add_argument("--backbone", required=True, help="moco_v2, effnet_lite0, pixels or inception_v3")
  p.add_argument("--out", required=True, help="the dataset directory to write, e.g. "
                 "<root>/cifar10-train-effnet_lite0 (see cnf_jax.data.feature_dataset.dataset_dir)")
  p.add_argument("--source_name", default=None, help="short source name stored in the metadata "
                 "(default: derived from --source)")
  p.add_argument("--resolution", type=int, default=None,
                 help="input size in pixels (default: 224 for CNNs, 32 for pixels); images are resized "
                 "(small ones upsampled) and centre-cropped to it")
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--limit", type=int, default=None, help="only the first N images (quick runs)")
  p.add_argument("--checkpoint", default=None, help="MoCo v2 checkpoint (.pth.tar) for moco_v2")
  p.add_argument("--precision", default="auto", help="auto (bf16 on AMX/AVX512-BF16 CPUs and GPUs), "
                 "bf16 or fp32")
  p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
  p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
  p.add_argument("--workers", type=int, default=2, help="image decoding threads")
  p.add_argument("--examples_per_shard", type=int, default=5000)
  p.add_argument("--bad_files", default="skip", choices=("skip", "error"),
                 help="unreadable files in the source: skip and count them, or stop with an error")
  p.add_argument("--data_dir", default=None, help="TFDS data_dir for tfds: sources")
  p.add_argument("--overwrite", action="store_true", help="rebuild --out even if it is complete")
  p.add_argument("--no_progress", action="store_true")
  return p.parse_args(argv)


def default_source_name(source: str) -> str:
  if source.startswith("tfds:"):
    return source[5:].split(":")[0].replace("/", "_")
  base = os.path.basename(source.rstrip("/").split(":")[-1])
  for suffix in (".zip", ".npz"):
    base = base[:-len(suffix)] if base.endswith(suffix) else base
  return base


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    return run(args)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def run(args) -> int:
  # Imported here so that --help and argument errors do not wait for torch.
  import torch  # pylint: disable=import-outside-toplevel
  from cnf_jax.extract import backbones, pipeline, sources  # pylint: disable=import-outside-toplevel

  out = os.path.expanduser(args.out)
  if os.path.exists(out) and not args.overwrite:
    print(f"{out} is already complete; pass --overwrite to rebuild it", file=sys.stderr)
    print(json.dumps({"images": 0, "seconds": 0.0, "images_per_s": 0.0, "complete": True, "out": out}))
    return 0
  if args.backbone not in backbones.BACKBONES:
    raise UserInputError(f"unknown backbone {args.backbone!r}; choose one of {', '.join(backbones.BACKBONES)}")
  if args.threads:
    torch.set_num_threads(args.threads)
  device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  bf16 = pipeline.resolve_precision(args.precision, device)
  source = sources.open_source(os.path.expanduser(args.source), args.split, data_dir=args.data_dir)
  backbone = backbones.build(args.backbone, resolution=args.resolution, checkpoint=args.checkpoint)
  result = pipeline.extract(
      source, backbone, out, split=args.split, source_name=args.source_name or default_source_name(args.source),
      batch_size=args.batch_size, limit=args.limit, bf16=bf16, device=device,
      examples_per_shard=args.examples_per_shard, bad_files=args.bad_files, overwrite=args.overwrite,
      workers=args.workers, progress=not args.no_progress)
  result.update(backbone=backbone.name, resolution=backbone.resolution, bf16=bf16, device=device)
  print(pipeline.result_line(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
