"""Throughput of the extraction stage: EfficientNet-Lite0 forward alone, and end to end.

  python benchmarks/extract_throughput.py [--zip=../shared/data/cifar10-jpeg.zip] [--images=2048]

(from the repository root after `pip install -e ".[extract]"`, or with PYTHONPATH=.)

Prints one JSON line per measurement, then a summary line:
  {"kind": "forward", "resolution": 128, "precision": "bf16", "images_per_s": ...}
  {"kind": "end_to_end", ...}   decode JPEGs from the zip, resize, forward, write TFRecords
Figures depend on what else runs on the machine: check `uptime` first (the load average
should be near 0 on an idle machine) and quote it with the numbers.
"""
import json
import os
import tempfile
import time
from typing import Sequence

import numpy as np
import torch
from absl import flags

from cnf_jax import cli
from cnf_jax.extract import backbones, pipeline, sources


def forward_rate(backbone, bf16: bool, batch_size: int, repeats: int):
  """(images/s, images per CPU-second) of the backbone alone on random uint8 images.

  One warm-up batch is not counted. Images per CPU-second (all threads of this
  process) hardly depends on other load; times the core count it bounds the
  rate on an otherwise idle machine.
  """
  images = torch.from_numpy(np.random.default_rng(0).integers(
      0, 256, (batch_size, backbone.resolution, backbone.resolution, 3), dtype=np.uint8))
  backbone.forward(images, bf16=bf16)
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(repeats):
    backbone.forward(images, bf16=bf16)
  n = batch_size * repeats
  return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("zip", "../shared/data/cifar10-jpeg.zip", "images for the end-to-end run", flag_values=fv)
  flags.DEFINE_string("split", "test", "split of --zip", flag_values=fv)
  flags.DEFINE_integer("images", 2048, "images per end-to-end run", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "images per forward pass", flag_values=fv)
  flags.DEFINE_integer("repeats", 8, "forward batches per forward measurement", flag_values=fv)
  flags.DEFINE_list("resolutions", ["128", "224"], "input resolutions to measure, comma-separated", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__)
  load = os.getloadavg()[0]
  summary = {"torch_threads": torch.get_num_threads(), "cpu_bf16": pipeline.cpu_has_bf16(),
             "loadavg_1min_at_start": round(load, 2)}
  for res in [int(r) for r in args.resolutions]:
    bb = backbones.build("effnet_lite0", resolution=res)
    for bf16 in (True, False):
      reps = args.repeats if res <= 128 or bf16 else max(2, args.repeats // 2)
      rate, per_cpu_s = forward_rate(bb, bf16, args.batch_size, reps)
      line = {"kind": "forward", "backbone": "effnet_lite0", "resolution": res,
              "precision": "bf16" if bf16 else "fp32", "batch_size": args.batch_size,
              "images_per_s": round(rate, 1), "images_per_cpu_s": round(per_cpu_s, 1)}
      print(json.dumps(line), flush=True)
      summary[f"forward_{res}px_{line['precision']}"] = line["images_per_s"]
    if os.path.exists(args.zip):
      source = sources.open_source(args.zip, args.split)
      cpu = time.process_time()
      with tempfile.TemporaryDirectory() as tmp:
        result = pipeline.extract(source, bb, os.path.join(tmp, "ds"), split=args.split, source_name="bench",
                                  batch_size=args.batch_size, limit=args.images, bf16=True, progress=False)
      line = {"kind": "end_to_end", "backbone": "effnet_lite0", "resolution": res, "precision": "bf16",
              "source": args.zip, "images": result["images"], "seconds": result["seconds"],
              "images_per_s": result["images_per_s"],
              "images_per_cpu_s": round(result["images"] / (time.process_time() - cpu), 1)}
      print(json.dumps(line), flush=True)
      summary[f"end_to_end_{res}px_bf16"] = line["images_per_s"]
  summary["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  cli.run(main)
