"""python -m cnf_jax.ablation_report --study=... --workdir=...: see cnf_jax.reports.ablations."""
import os
import sys
from typing import Sequence

from cnf_jax.errors import UserInputError
from cnf_jax.reports.ablations import STUDIES, write_report, __doc__ as _DOC


def main(argv: Sequence[str]) -> None:
  import argparse
  parser = argparse.ArgumentParser(prog="python -m cnf_jax.ablation_report", description=_DOC.split("\n")[0])
  parser.add_argument("--study", required=True, choices=STUDIES)
  parser.add_argument("--workdir", required=True, help="the sweep root")
  parser.add_argument("--out", default=None, help="where to write (default: the sweep root)")
  args = parser.parse_args(argv)
  try:
    for path in write_report(args.study, args.workdir, args.out):
      print(path)
    print(open(os.path.join(os.path.expanduser(args.out or args.workdir), f"{args.study}.md")).read())
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main(sys.argv[1:])
