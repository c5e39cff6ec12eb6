"""Soak: many main jobs (and sweeps) killed at random moments and resumed, each compared with an
uninterrupted run; counts every exit that is not what the signal explains.

  python benchmarks/soak.py --runs 40 --minutes 30 --parallel 3 --out benchmarks/results/soak/x.json

A run is one workdir driven to completion: attempt, then (with probability --interrupt) SIGKILL or
SIGTERM after a random delay, then attempt again, at most --max_interrupts times, then a last
attempt left alone. Expected exits: 0; -9 after SIGKILL; 75 (checkpointed stop) or -15 (SIGTERM
before the handler was installed, during imports) after SIGTERM; -6 after an injected SIGABRT
(--signals SIGABRT: what a native abort does to the run, whatever its cause); 0 when the signal
came too late.
Anything else (-6 SIGABRT, -11, 1, 3, ...) is "abnormal": its stderr is kept under --keep, and a
core file too with --cores (ulimit -c unlimited, the core lands in the attempt's directory).

The allocator setting alternates between runs (--malloc keep,default: CNF_JAX_HOST_MALLOC), and
--host_devices 2 runs every process on two CPU devices (data-parallel steps with in-process
collectives), as the test suite runs its CLIs. --malloc_debug adds glibc's checker
(LD_PRELOAD=libc_malloc_debug.so.0 MALLOC_CHECK_=3) and a random MALLOC_PERTURB_ to every attempt.
The finished results.json must equal, byte for byte, the reference run's of the same job (one
uninterrupted run per job and allocator setting, made first).

Prints one JSON line per run and a summary line (runs, attempts, kills, aborts, abnormal exits,
mismatches); --out writes the summary with the per-run lines.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_PREEMPTED = 75
MALLOC_DEBUG_LIB = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"

# The job CI aborted in (toy2d with outlier exposure: flow, then oe fine-tuned from it), checkpointed
# often so kills land between, during and after checkpoint writes.
MAIN_ARGS = ["-m", "cnf_jax.main", f"--config={ROOT}/configs/toy2d.py:runlocal", "--config.methods=oe",
             "--config.train.steps=200", "--config.train.oe_steps=200", "--config.train.checkpoint_every=50",
             "--config.train.log_every=25"]
SWEEP_ARGS = ["-m", "cnf_jax.sweep", f"--config={ROOT}/configs/toy2d.py", "--arg=runlocal",
              "--set=methods=cf,flow", "--set=train.steps=200", "--set=train.checkpoint_every=50",
              "--set=train.log_every=25"]
JOBS = {"main": MAIN_ARGS, "sweep": SWEEP_ARGS}
# Exit codes that the signal sent explains (besides 0, when it came too late).
EXPECTED_AFTER = {"SIGKILL": {-9}, "SIGTERM": {EXIT_PREEMPTED, -15}, "SIGABRT": {-6}}


def _results(job: str, workdir: str) -> dict:
  """{relative path: bytes} of every results.json of a finished job."""
  out = {}
  for d, _, files in os.walk(workdir):
    if "results.json" in files:
      with open(os.path.join(d, "results.json"), "rb") as f:
        out[os.path.relpath(d, workdir)] = f.read()
  return out


def _attempt(job: str, workdir: str, env: dict, log_path: str, signal_after, cores: bool, timeout: float):
  """One process of `job` on `workdir`; sends signal_after = (signal, seconds) if given. Returns its exit code."""
  args = [sys.executable] + JOBS[job] + [f"--workdir={workdir}"]
  limits = (lambda: resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            ) if cores else None
  with open(log_path, "w") as log:
    proc = subprocess.Popen(args, cwd=os.path.dirname(log_path), env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=limits)
    if signal_after is not None:
      sig, delay = signal_after
      try:
        proc.wait(delay)
      except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    try:
      return proc.wait(timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      return "timeout"


def _env(malloc: str, malloc_debug: bool, rng: random.Random, host_devices: int = 1) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, CNF_JAX_HOST_MALLOC=malloc, PYTHONFAULTHANDLER="1")
  if host_devices > 1:   # several CPU devices: data-parallel training with in-process collectives
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={host_devices}"
  if malloc_debug:
    env.update(LD_PRELOAD=MALLOC_DEBUG_LIB, MALLOC_CHECK_="3", MALLOC_PERTURB_=str(rng.randint(1, 255)))
  return env


def soak_run(index: int, job: str, malloc: str, args, reference: dict, work: str, seed: int) -> dict:
  """One workdir driven to completion with random interruptions; returns its record."""
  rng = random.Random(seed)
  run_dir = os.path.join(work, f"run{index:04d}")
  workdir = os.path.join(run_dir, "w")
  os.makedirs(run_dir)
  record = {"run": index, "job": job, "malloc": malloc, "attempts": [], "abnormal": []}
  interrupts = 0
  while True:
    env = _env(malloc, args.malloc_debug, rng, args.host_devices)
    signal_after = None
    if interrupts < args.max_interrupts and rng.random() < args.interrupt:
      signal_after = (rng.choice(args.signal_list), rng.uniform(1.0, args.max_delay))
      interrupts += 1
    n = len(record["attempts"])
    attempt_dir = os.path.join(run_dir, f"attempt{n}")
    os.makedirs(attempt_dir)
    code = _attempt(job, workdir, env, os.path.join(attempt_dir, "log.txt"), signal_after, args.cores, args.timeout)
    sig = signal_after and signal.Signals(signal_after[0]).name
    record["attempts"].append({"signal": sig, "delay": signal_after and round(signal_after[1], 2), "exit": code})
    expected = {0} | EXPECTED_AFTER.get(sig, set())
    if code not in expected:
      keep = os.path.join(args.keep, f"run{index:04d}_attempt{n}")
      shutil.copytree(attempt_dir, keep, dirs_exist_ok=True)
      with open(os.path.join(attempt_dir, "log.txt")) as f:
        tail = f.read()[-3000:]
      record["abnormal"].append({"attempt": n, "exit": code, "signal": sig, "kept": keep, "tail": tail})
      if n >= 2 * args.max_interrupts + 4:
        break   # it keeps failing: stop this run, it is counted
    if code == 0:
      break
  got = _results(job, workdir) if record["attempts"][-1]["exit"] == 0 else {}
  record["match"] = bool(got) and got == reference
  shutil.rmtree(run_dir, ignore_errors=True)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=20, help="runs to start at most")
  parser.add_argument("--minutes", type=float, default=20,
                      help="start no run after this many minutes (0: no bound, every --runs run starts)")
  parser.add_argument("--parallel", type=int, default=2, help="runs at a time (load on the machine)")
  parser.add_argument("--malloc", default="keep,default", help="CNF_JAX_HOST_MALLOC values, alternated")
  parser.add_argument("--malloc_debug", action="store_true", help="glibc's malloc checker + MALLOC_PERTURB_")
  parser.add_argument("--sweep_every", type=int, default=5, help="every k-th run is a sweep (0: never)")
  parser.add_argument("--interrupt", type=float, default=0.8, help="probability that an attempt is signalled")
  parser.add_argument("--signals", default="SIGKILL,SIGTERM",
                      help=f"sent at random, of {', '.join(EXPECTED_AFTER)} "
                           "(with --cores, each SIGABRT writes a core)")
  parser.add_argument("--max_interrupts", type=int, default=2, help="signals per run at most")
  parser.add_argument("--max_delay", type=float, default=15.0,
                      help="signal after uniform(1, this) seconds (an attempt of the main job takes ~12 s idle)")
  parser.add_argument("--timeout", type=float, default=600.0, help="an attempt running longer is killed")
  parser.add_argument("--host_devices", type=int, default=1,
                      help="CPU devices per process (XLA_FLAGS); the test suite runs its CLIs with 2")
  parser.add_argument("--cores", action="store_true", help="ulimit -c unlimited for every attempt")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--keep", default=os.path.join(tempfile.gettempdir(), "cnf_soak_abnormal"),
                      help="where the logs (and cores) of abnormal attempts are kept")
  parser.add_argument("--out", default=None, help="write the summary JSON here")
  args = parser.parse_args()
  unknown = set(args.signals.split(",")) - set(EXPECTED_AFTER)
  if unknown:
    parser.error(f"--signals: {', '.join(sorted(unknown))} not one of {', '.join(EXPECTED_AFTER)}")
  args.signal_list = [signal.Signals[name] for name in args.signals.split(",")]

  start = time.time()
  work = tempfile.mkdtemp(prefix="cnf_soak_")
  mallocs = args.malloc.split(",")
  jobs = [(i, "sweep" if args.sweep_every and i % args.sweep_every == args.sweep_every - 1 else "main",
           mallocs[i % len(mallocs)]) for i in range(args.runs)]
  references = {}
  for job, malloc in sorted({(j, m) for _, j, m in jobs}):
    workdir = os.path.join(work, f"reference_{job}_{malloc}", "w")
    os.makedirs(os.path.dirname(workdir))
    code = _attempt(job, workdir, _env(malloc, False, random.Random(0), args.host_devices),
                    os.path.join(os.path.dirname(workdir), "log.txt"), None, False, args.timeout)
    if code != 0:
      sys.exit(f"reference run {job}/{malloc} failed with exit {code}; see {os.path.dirname(workdir)}/log.txt")
    references[(job, malloc)] = _results(job, workdir)
  same_across_malloc = all(references[(j, mallocs[0])] == references[(j, m)] for j, m in references)

  records, lock = [], threading.Lock()

  def one(spec):
    i, job, malloc = spec
    if args.minutes > 0 and time.time() - start > args.minutes * 60:
      return None
    record = soak_run(i, job, malloc, args, references[(job, malloc)], work, args.seed * 100003 + i)
    with lock:
      records.append(record)
      print(json.dumps({k: v for k, v in record.items() if k != "abnormal"} |
                       {"abnormal": [(a["attempt"], a["exit"]) for a in record["abnormal"]]}), flush=True)
      if args.out:   # after every run, so that a soak stopped part way still leaves its figures
        _write_summary(args.out, _summary(records, args, start, same_across_malloc, finished=False), records)
    return record

  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    list(pool.map(one, jobs))
  shutil.rmtree(work, ignore_errors=True)

  summary = _summary(records, args, start, same_across_malloc, finished=True)
  print(json.dumps({k: v for k, v in summary.items() if k != "abnormal"}))
  if args.out:
    _write_summary(args.out, summary, records)


def _summary(records: list, args, start: float, same_across_malloc: bool, finished: bool) -> dict:
  """The soak's figures over the runs in `records` (finished: every run that was to start has)."""
  attempts = [a for r in records for a in r["attempts"]]
  abnormal = [dict(a, run=r["run"], malloc=r["malloc"], job=r["job"]) for r in records for a in r["abnormal"]]
  return {
      "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
      "finished": finished,
      "runs": len(records),
      "runs_by_job": dict(collections.Counter(r["job"] for r in records)),
      "runs_by_malloc": dict(collections.Counter(r["malloc"] for r in records)),
      "attempts": len(attempts),
      "kills": dict(collections.Counter(a["signal"] for a in attempts if a["signal"])),
      "exits": dict(collections.Counter(str(a["exit"]) for a in attempts)),
      # Aborts the soak did not inject (an injected SIGABRT's -6 is expected, not counted here).
      "aborts": sum(1 for a in attempts if a["exit"] == -6 and a["signal"] != "SIGABRT"),
      "abnormal_exits": len(abnormal),
      "mismatches": sum(1 for r in records if not r["match"]),
      "references_equal_across_malloc": same_across_malloc,
      "malloc_debug": args.malloc_debug,
      "host_devices": args.host_devices,
      "minutes": round((time.time() - start) / 60, 1),
      "abnormal": abnormal,
  }


def _write_summary(path: str, summary: dict, records: list) -> None:
  """Writes the summary with the per-run records to `path` atomically (a reader never sees half)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(dict(summary, records=sorted(records, key=lambda r: r["run"])), f, indent=1)
    f.write("\n")
  os.replace(path + ".tmp", path)


if __name__ == "__main__":
  main()
