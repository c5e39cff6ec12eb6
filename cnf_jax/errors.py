"""Errors that mean "the input or configuration is wrong", not "the code is wrong".

The CLI prints these as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class UserInputError(ValueError):
  """Bad data, config or workdir; the message says what is wrong and what to do."""


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the message names the step and the last good checkpoint."""
