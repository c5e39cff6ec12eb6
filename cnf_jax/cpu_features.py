"""What this machine's CPU offers, read from /proc/cpuinfo (Linux).

The flags decide where bfloat16 pays off: the flows' conditioner products
(flows.flow.resolve_compute_dtype) and the extractor's autocast (extract.pipeline).
"""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
  """The feature flags of the first CPU listed in `cpuinfo` ('flags' on x86, 'Features' on
  aarch64); empty where the file cannot be read (not Linux)."""
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return frozenset(line.partition(":")[2].split())
  except OSError:
    pass
  return frozenset()
