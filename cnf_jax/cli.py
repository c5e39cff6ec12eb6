"""What every command-line tool shares: absl flags parsed into a fresh FlagValues, one-line errors.

A tool (cnf_jax.sweep, cnf_jax.report, cnf_jax.extract, ...) is three pieces:

  def define_flags(fv: flags.FlagValues) -> None:      # flags.DEFINE_*(..., flag_values=fv)
  @cli.command
  def main(argv: Sequence[str]) -> int:                 # argv without the program name
    fv, positional = cli.parse(define_flags, argv, __doc__, required=("out",))
    ...
  if __name__ == "__main__":
    cli.run(main)

Each call parses into its own FlagValues, not absl's global FLAGS: absl refuses a flag
name defined by two modules (DuplicateFlagError), and one process may import several
tools (the tests do; cnf_jax.report and cnf_jax.extract both have --out); a global
FLAGS would also keep the values of one call in the next. So library modules define no
flags, and main(argv) can be called as often as one likes.

Bad input (an unknown or malformed flag, a missing required flag, a UserInputError
raised by the work) prints one line `error: ...` on stderr and gives exit code 2.
--help prints the tool's docstring and its flags.
cnf_jax.main alone uses absl's app.run and the global FLAGS (its --config.<key> overrides
come from ml_collections' config_flags); it follows the same error convention.
"""
import functools
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging

from cnf_jax.errors import UserInputError

EXIT_USER_ERROR = 2
HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def parse(define_flags: Callable[[flags.FlagValues], None], argv: Sequence[str], usage: str = "", *,
          required: Sequence[str] = (), max_positional: int = 0) -> Tuple[flags.FlagValues, List[str]]:
  """argv (no program name) -> (flag values, positional arguments), parsed into a fresh FlagValues.

  define_flags(fv) defines the tool's flags on fv. absl syntax: --name=value or
  --name value, --flag / --noflag for booleans, --flagfile=FILE. A flag in `required`
  left at None (or empty) and more than `max_positional` positional arguments are
  errors. Raises UserInputError for bad input; prints `usage` and the flags and
  raises SystemExit(0) for --help.
  """
  fv = flags.FlagValues()
  define_flags(fv)
  argv = list(argv)
  if any(a in HELP_FLAGS for a in argv):
    print(usage.strip() + "\n\nflags:" + fv.get_help(prefix="  ", include_special_flags=False))
    raise SystemExit(0)
  try:
    positional = fv(["cnf_jax"] + argv)[1:]
  except flags.Error as e:
    raise UserInputError(" ".join(str(e).split())) from None   # absl's messages can span lines
  check_required(fv, required)
  if len(positional) > max_positional:
    raise UserInputError(f"unexpected argument(s) {' '.join(positional[max_positional:])}; "
                         "flags are --name=value (see --help)")
  return fv, positional


def check_required(fv: flags.FlagValues, names: Sequence[str]) -> None:
  """UserInputError naming the first flag of `names` left at None (or empty)."""
  for name in names:
    if fv[name].value in (None, "", []):
      raise UserInputError(f"--{name} is required: {fv[name].help}")


def command(main: Callable[[List[str]], int]) -> Callable[..., int]:
  """Wraps main(argv) -> exit code: a UserInputError becomes `error: ...` on stderr and exit code 2.

  The wrapped main takes argv without the program name (default: sys.argv[1:]).
  """
  @functools.wraps(main)
  def wrapped(argv: Optional[Sequence[str]] = None) -> int:
    try:
      return main(list(sys.argv[1:] if argv is None else argv))
    except UserInputError as e:
      print(f"error: {e}", file=sys.stderr)
      return EXIT_USER_ERROR
  return wrapped


def run(main: Callable[[Sequence[str]], int]) -> None:
  """The `python -m` entry of a tool: exits with main(sys.argv[1:]), absl logging on stderr.

  absl's log handler (the format of app.run, used by cnf_jax's progress messages and by
  orbax) reads its own settings from the global FLAGS; they stay at their defaults here.
  """
  flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  sys.exit(main(sys.argv[1:]))
