"""python -m cnf_jax.report <sweep root>: markdown tables and plots of a sweep (see cnf_jax.reports.tables)."""
import argparse
import os
import sys

from cnf_jax.errors import UserInputError
from cnf_jax.reports.tables import write_report


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m cnf_jax.report", description="Markdown tables and plots of a sweep.")
  p.add_argument("root", help="the sweep root (launch.sweep's --workdir): one run directory per run")
  p.add_argument("--out", default=None, help="output folder (default <root>/report)")
  p.add_argument("--config", default=None, help="the config file that declares the sweep, to list runs never "
                 "launched (default: <root>/sweep.json when launch.sweep wrote it)")
  p.add_argument("--method", default="cf", help="method of the per-anomaly-class table and of the examples")
  p.add_argument("--data_dir", default=None, help="TFDS data_dir, to show images of tfds: sources")
  p.add_argument("--examples", type=int, default=3, help="images per group in the examples figure (Fig. 5)")
  p.add_argument("--no_plots", action="store_true")
  p.add_argument("--also", action="append", default=[], help="another sweep root with the same runs and other "
                 "methods (e.g. baselines run separately); its AUROCs join the tables (repeatable)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    path = write_report(args.root, args.out, config_path=args.config, method=args.method,
                        plots=not args.no_plots, data_dir=args.data_dir, examples=args.examples, also=args.also)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with open(path) as f:
    print(f.read())
  print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
