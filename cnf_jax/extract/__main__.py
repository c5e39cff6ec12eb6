"""python -m cnf_jax.extract --source=<src> --split=<split> --backbone=<name> --out=<dir> [...]

Example (CIFAR-10 test split from the JPEG zip, EfficientNet-Lite0 at 128 px):

  python -m cnf_jax.extract --source=../shared/data/cifar10-jpeg.zip --split=test \\
      --backbone=effnet_lite0 --resolution=128 \\
      --out=~/.cache/cnf_jax/features/cifar10-test-effnet_lite0

Progress goes to stderr; the last stdout line is JSON with images, seconds,
images_per_s. Bad input prints `error: ...` and exits with status 2; a finished
dataset at --out is left alone (exit 0) unless --overwrite.
"""
import json
import os
import sys
from typing import Sequence

from absl import flags

from cnf_jax import cli
from cnf_jax.errors import UserInputError

SOURCE_HELP = ("tfds:<name> (e.g. tfds:cifar10), npz:<path>, or a folder / .zip in the "
               "root/split/label/image layout")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("source", None, SOURCE_HELP, flag_values=fv)
  flags.DEFINE_string("split", None, "train, test, ... (the folder name for folders/zips)", flag_values=fv)
  flags.DEFINE_string("backbone", None, "moco_v2 (needs --checkpoint), effnet_lite0, effnet_lite1, effnet_lite2 "
                      "(1280-d; default resolution 224/240/260), pixels or inception_v3 (2048-d, needs "
                      "--checkpoint and --resolution >= 75, default 299)", flag_values=fv)
  flags.DEFINE_string("out", None, "the dataset directory to write, e.g. <root>/cifar10-train-effnet_lite0 "
                      "(see cnf_jax.data.feature_dataset.dataset_dir)", flag_values=fv)
  flags.DEFINE_string("source_name", None, "short source name stored in the metadata (default: derived from "
                      "--source)", flag_values=fv)
  flags.DEFINE_integer("resolution", None, "input size in pixels (default: 224 for CNNs, 32 for pixels); images "
                       "are resized (small ones upsampled) and centre-cropped to it", flag_values=fv)
  flags.DEFINE_integer("bottleneck", 0, "pass every image through this many pixels (shorter side, centre "
                       "crop) before resizing it for the backbone, e.g. 32 for contrastive images that must look "
                       "like 32 px CIFAR inliers (paper: ImageNet shrunk to 32 x 32); 0: none", flag_values=fv)
  flags.DEFINE_integer("bottleneck_jpeg_quality", 75, "with --bottleneck: JPEG quality of the round trip at that "
                       "size (75: the CIFAR zip's; 0: no JPEG)", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "images per forward pass", flag_values=fv)
  flags.DEFINE_integer("limit", None, "only the first N images (quick runs)", flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "moco_v2: MoCo v2 checkpoint (.pth.tar); inception_v3: torchvision's "
                      "ImageNet state dict (inception_v3_google-0cc3c7bd.pth), a local file", flag_values=fv)
  flags.DEFINE_string("precision", "auto", "auto (bf16 on AMX/AVX512-BF16 CPUs and GPUs), bf16 or fp32 "
                      "(float32 also on GPUs: no TF32)", flag_values=fv)
  flags.DEFINE_string("device", None, "cpu or cuda (default: cuda if available)", flag_values=fv)
  flags.DEFINE_integer("threads", None, "torch CPU threads (default: torch's)", flag_values=fv)
  flags.DEFINE_integer("workers", 2, "image decoding threads", flag_values=fv)
  flags.DEFINE_integer("examples_per_shard", 5000, "examples per TFRecord shard", flag_values=fv)
  flags.DEFINE_enum("bad_files", "skip", ["skip", "error"], "unreadable files in the source: skip and count "
                    "them, or stop with an error", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data_dir for tfds: sources", flag_values=fv)
  flags.DEFINE_bool("flip_average", False, "each feature is the mean of the backbone's features of the image and "
                    "of its left-right mirror (test-time augmentation, 2x the forward passes); recorded in "
                    "metadata.json", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "rebuild --out even if it is complete", flag_values=fv)
  flags.DEFINE_bool("no_progress", False, "no progress lines on stderr", flag_values=fv)


def default_source_name(source: str) -> str:
  if source.startswith("tfds:"):
    return source[5:].split(":")[0].replace("/", "_")
  base = os.path.basename(source.rstrip("/").split(":")[-1])
  for suffix in (".zip", ".npz"):
    base = base[:-len(suffix)] if base.endswith(suffix) else base
  return base


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__, required=("source", "split", "backbone", "out"))
  return run(args)


def run(args: flags.FlagValues) -> int:
  # Imported here so that --help and flag errors do not wait for torch.
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
  if not bf16:
    pipeline.full_float32(torch)
  if args.bottleneck < 0 or not 0 <= args.bottleneck_jpeg_quality <= 95:
    raise UserInputError(f"--bottleneck={args.bottleneck} must be >= 0 pixels and --bottleneck_jpeg_quality="
                         f"{args.bottleneck_jpeg_quality} in [0, 95]")
  bottleneck = sources.Bottleneck(args.bottleneck, args.bottleneck_jpeg_quality) if args.bottleneck else None
  source = sources.open_source(os.path.expanduser(args.source), args.split, data_dir=args.data_dir)
  backbone = backbones.build(args.backbone, resolution=args.resolution, checkpoint=args.checkpoint)
  result = pipeline.extract(
      source, backbone, out, split=args.split, source_name=args.source_name or default_source_name(args.source),
      batch_size=args.batch_size, limit=args.limit, bf16=bf16, device=device,
      examples_per_shard=args.examples_per_shard, bad_files=args.bad_files, overwrite=args.overwrite,
      workers=args.workers, progress=not args.no_progress, bottleneck=bottleneck, flip_average=args.flip_average)
  result.update(backbone=backbone.name, resolution=backbone.resolution, bf16=bf16, device=device,
                flip_average=args.flip_average)
  print(pipeline.result_line(result))
  return 0


if __name__ == "__main__":
  cli.run(main)
