"""Label-free model selection: a criterion computed from training data alone, and the choice it makes.

The criterion, 'heldout_auroc': with train.validation_fraction = f > 0 a run holds out a
fraction f of its training inliers and of its contrastive rows (`plan.with_validation`;
on tables the held-out inliers with every column permuted). No flow and no baseline is
fitted on them. After training, every method scores both held-out sets, and the criterion
is the AUROC of telling the held-out contrastive rows (positive) from the held-out inliers
by that anomaly score. No test row and no anomaly label enters it, so it can choose a
method's settings on data the user has: in-distribution rows and a broad auxiliary set.

It asks "does the score rank unseen inliers below unseen broad data?". The test set asks
the same about unseen inliers and the anomaly classes; how far the two agree is measured,
not assumed: `choose` and `rank_correlation` turn a set of candidate runs (one group: the
same data split and seed, other settings) into the chosen run per method and Spearman's
rho between the criterion and the test AUROC over the candidates. Methods fitted to the
contrastive data (cf, flow_ratio, oe, mse_ratio) are judged on held-out rows of the very
distribution they were trained against, so for them it can reward fitting that auxiliary
set; for the others (flow, kde, knn, ...) it is a pure proxy.
"""
import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as sp_stats

from cnf_jax.evaluation import metrics

CRITERION = "heldout_auroc"


def heldout_auroc(inlier_scores: np.ndarray, contrastive_scores: np.ndarray) -> float:
  """AUROC of anomaly scores telling held-out contrastive rows [W] (positive) from held-out
  inliers [V]; 0.5 is chance, NaN scores count as the most anomalous (metrics.auroc)."""
  scores = np.concatenate([np.asarray(inlier_scores, np.float64), np.asarray(contrastive_scores, np.float64)])
  is_contrastive = np.concatenate([np.zeros(len(inlier_scores), bool), np.ones(len(contrastive_scores), bool)])
  return metrics.auroc(scores, is_contrastive)


def criterion_record(inlier_scores: Mapping[str, np.ndarray], contrastive_scores: Mapping[str, np.ndarray]) -> dict:
  """results.json's "selection" entry: {criterion, num_val_inliers, num_val_contrastive, values:
  {method: heldout_auroc}} from each method's scores of the held-out inliers and contrastive rows."""
  methods = list(inlier_scores)
  return {"criterion": CRITERION,
          "num_val_inliers": int(len(inlier_scores[methods[0]])) if methods else 0,
          "num_val_contrastive": int(len(contrastive_scores[methods[0]])) if methods else 0,
          "values": {m: heldout_auroc(inlier_scores[m], contrastive_scores[m]) for m in methods}}


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One run's result for one method: its name, settings (the config keys in which it differs
  from the other runs of its group, as 'key=value' strings), criterion and test AUROC."""
  run: str
  settings: str
  criterion: float
  test_auroc: float


def choose(candidates: Sequence[Candidate]) -> Candidate:
  """The candidate with the highest criterion (NaN never wins); ties go to the first in order."""
  if not candidates:
    raise ValueError("no candidates to choose from")
  best = None
  for c in candidates:
    if not np.isnan(c.criterion) and (best is None or c.criterion > best.criterion):
      best = c
  return best if best is not None else candidates[0]


def rank_correlation(candidates: Sequence[Candidate]) -> Optional[float]:
  """Spearman's rho between criterion and test AUROC over the candidates (ties get mean ranks);
  None with fewer than 3 candidates or when either is constant (rho undefined)."""
  crit = np.array([c.criterion for c in candidates], np.float64)
  test = np.array([c.test_auroc for c in candidates], np.float64)
  keep = ~(np.isnan(crit) | np.isnan(test))
  crit, test = crit[keep], test[keep]
  if len(crit) < 3 or np.ptp(crit) == 0 or np.ptp(test) == 0:
    return None
  return float(sp_stats.spearmanr(crit, test).statistic)


@dataclasses.dataclass(frozen=True)
class Selection:
  """The outcome for one method in one group of candidate runs.

  chosen: what the criterion picks; oracle: the best test AUROC among the candidates (what
  choosing on test labels would report: shown to measure the cost of not doing so, never to
  choose); rho: `rank_correlation`; candidates in run order.
  """
  group: str
  method: str
  chosen: Candidate
  oracle: Candidate
  rho: Optional[float]
  candidates: List[Candidate]


def select(group: str, method: str, candidates: Sequence[Candidate]) -> Selection:
  oracle = max(candidates, key=lambda c: (-np.inf if np.isnan(c.test_auroc) else c.test_auroc))
  return Selection(group, method, choose(candidates), oracle, rank_correlation(candidates), list(candidates))


def setting_labels(config: Mapping, prefix: str = "") -> Dict[str, str]:
  """{dotted key: value as text} of a nested config dict (config.json's form): lists joined by
  commas, so that settings compare and print as one string each."""
  out = {}
  for k, v in config.items():
    if isinstance(v, Mapping):
      out.update(setting_labels(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
  return out


def select_runs(runs: Sequence[Mapping], group_by: Sequence[str]) -> List[Selection]:
  """Per group of finished runs and per method with a criterion, the `Selection`.

  runs: dicts with 'run' (name), 'config' (config.json) and 'results' (results.json), as
    `reports.tables.load_runs` returns them; runs without results["selection"] are left out.
  group_by: dotted config keys whose values make a group (e.g. seed, data.inlier_class).
    A method's candidates are the runs of the group that evaluated it; the config keys in
    which they differ (other than `methods`) are their settings.
  """
  groups: Dict[tuple, List[Mapping]] = {}
  for run in runs:
    if "selection" not in run.get("results", {}):
      continue
    labels = setting_labels(run["config"])
    groups.setdefault(tuple(labels.get(k, "None") for k in group_by), []).append(run)
  out = []
  for key, members in sorted(groups.items()):
    name = ",".join(f"{k}={v}" for k, v in zip(group_by, key))
    methods = []
    for r in members:
      methods += [m for m in r["results"]["selection"]["values"] if m not in methods]
    for method in methods:
      runs_m = [r for r in members if method in r["results"]["selection"]["values"]]
      run_labels = [setting_labels(r["config"]) for r in runs_m]
      # Settings: the keys in which this method's candidates differ (not 'methods' itself).
      varying = sorted(k for k in set().union(*run_labels)
                       if k != "methods" and len({f.get(k, "None") for f in run_labels}) > 1)
      cands = [Candidate(r["run"], " ".join(f"{k}={f.get(k, 'None')}" for k in varying) or "default",
                         float(r["results"]["selection"]["values"][method]),
                         float(r["results"]["auroc"].get(method, np.nan)))
               for r, f in zip(runs_m, run_labels)]
      out.append(select(name, method, cands))
  return out


def markdown(selections: Sequence[Selection]) -> str:
  """Per method: the mean test AUROC of the chosen candidates, of the best ones (oracle) and the
  mean rho; then one row per group and method."""
  methods = list(dict.fromkeys(s.method for s in selections))
  lines = [f"Criterion: {CRITERION} (held-out inliers against held-out contrastive rows; no test data, "
           "no anomaly labels). AUROC in %. 'oracle' is the best test AUROC among the candidates: "
           "what choosing on test labels would report, shown only to measure the gap.", "",
           "| method | groups | candidates per group | chosen (mean) | oracle (mean) | gap | mean Spearman rho |",
           "|---|---|---|---|---|---|---|"]
  for m in methods:
    sel = [s for s in selections if s.method == m]
    chosen = np.mean([s.chosen.test_auroc for s in sel]) * 100
    oracle = np.mean([s.oracle.test_auroc for s in sel]) * 100
    rhos = [s.rho for s in sel if s.rho is not None]
    sizes = sorted({len(s.candidates) for s in sel})
    rho = f"{np.mean(rhos):.2f} ({len(rhos)})" if rhos else "-"
    lines.append(f"| {m} | {len(sel)} | {'/'.join(map(str, sizes))} | {chosen:.2f} | {oracle:.2f} | "
                 f"{chosen - oracle:+.2f} | {rho} |")
  lines += ["", "| group | method | chosen settings | criterion | test AUROC | oracle settings | oracle AUROC | rho |",
            "|---|---|---|---|---|---|---|---|"]
  for s in selections:
    rho = "-" if s.rho is None else f"{s.rho:.2f}"
    lines.append(f"| {s.group} | {s.method} | {s.chosen.settings} | {s.chosen.criterion * 100:.2f} | "
                 f"{s.chosen.test_auroc * 100:.2f} | {s.oracle.settings} | {s.oracle.test_auroc * 100:.2f} | {rho} |")
  return "\n".join(lines) + "\n"
