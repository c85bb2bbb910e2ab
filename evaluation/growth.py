"""A grown model, measured (issue 12): whether each test sample is answered right from each subset of
a bundle's modalities, clean, through the exported ONNX files, the reliability gate and the
service's fusion (`evaluation/runner.py`); and the goals of `anymodal extend`, over seeds:

- every subset of the old modalities loses at most 0.5 pt against the version it grew from;
- with every modality, the grown model is within 1 pt of one trained on all of them from scratch;
- in at most 40% of the time that one took to train.

Accuracy differences come with a 95% paired bootstrap interval over test samples, pooled across
seeds (`evaluation/stats.py`); the time ratio, each seed's extend seconds over its from-scratch
seconds, as the mean over seeds with their range. A goal is met only when its
whole interval lies on the right side of its threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anymodal.evaluation.corruptions import SEVERITIES, families
from anymodal.evaluation.robustness import CLEAN, TestInputs, condition_name, subsets
from anymodal.evaluation.runner import BundleRunner, ModalityOutputs
from anymodal.evaluation.stats import Interval, paired_bootstrap, seed_spread
from anymodal.service.manifest import read_manifest
from anymodal.training.dataset import read_split

Outcomes = dict[str, np.ndarray]  # subset name ("image+text") -> (N,) 1.0 right, 0.0 wrong, NaN not covered
FORGETTING_MARGIN = 0.005
SCRATCH_MARGIN = 0.01
TIME_SHARE = 0.4


def subset_name(subset: tuple[str, ...]) -> str:
    return "+".join(subset)


class TestSplit:
    """The test split, decoded once; the encoder inputs of each bundle's contracts computed once."""

    def __init__(self, path: Path, bundle: Path) -> None:
        """Decode `path` with the modalities and labels of `bundle`, which must name every modality."""
        manifest = read_manifest(bundle)
        contracts = {m: spec.input for m, spec in manifest.modalities.items()}
        split, _ = read_split(path, contracts, manifest.labels, skip_bad_rows=False)
        self.signals, self.labels = split.signals, split.labels
        self._inputs: dict[str, TestInputs] = {}

    def inputs(self, runner: BundleRunner) -> TestInputs:
        key = repr({m: c.model_dump() for m, c in runner.contracts.items()})
        if key not in self._inputs:
            self._inputs[key] = TestInputs({m: self.signals[m] for m in runner.contracts}, runner.contracts)
        return self._inputs[key]


def outcomes(bundle: Path, test: TestSplit, order: list[str]) -> Outcomes:
    """Per subset of the bundle's modalities, whether each test sample is answered right (gate on)
    from the modalities of the subset it has, clean; NaN for samples with none of them. Subsets are named in
    the order of `order`, so that bundles which list their modalities differently compare."""
    runner = BundleRunner(bundle)
    data = test.inputs(runner)
    clean = {m: runner.run(m, data.inputs(m, CLEAN), data.present[m]) for m in runner.modalities}
    present = np.stack([data.present[m] for m in runner.modalities], axis=1)
    out = {}
    for subset in subsets([m for m in order if m in runner.modalities]):
        chosen = present & np.isin(runner.modalities, subset)[None, :]
        rows = np.flatnonzero(chosen.any(axis=1))
        sliced = {m: ModalityOutputs(o.logits[rows], o.p_values[rows]) for m, o in clean.items()}
        answers = runner.answer(sliced, chosen[rows])
        correct = np.full(len(test.labels), np.nan)
        correct[rows] = answers.labels == test.labels[rows]
        out[subset_name(subset)] = correct
    return out


def flagged(bundle: Path, test: TestSplit, modality: str) -> dict[str, float]:
    """The share of `test`'s `modality` inputs its gate leaves out (p-value below alpha), clean and
    under each corruption family of the evaluation suite at its highest severity: whether the gate
    still tells broken inputs from clean ones."""
    runner = BundleRunner(bundle)
    data = test.inputs(runner)
    present = data.present[modality]
    alpha = runner.alphas[runner.modalities.index(modality)]
    kind = runner.contracts[modality].kind
    conditions = [CLEAN, *(condition_name(modality, f, SEVERITIES[-1]) for f in families(kind))]
    shares = {}
    for condition in conditions:
        p_values = runner.run(modality, data.inputs(modality, condition), present).p_values[present]
        shares[condition] = float((p_values < alpha).mean())
    return shares


def accuracy(per_seed: list[Outcomes], subset: str) -> dict:
    """Mean accuracy over seeds, the lowest and highest seed's, and each seed's."""
    values = [float(np.nanmean(seed[subset])) for seed in per_seed]
    mean, low, high = seed_spread(values)
    return {"mean": mean, "min": low, "max": high, "seeds": values}


def _difference(a: list[Outcomes], b: list[Outcomes], subset: str) -> Interval:
    return paired_bootstrap(np.stack([s[subset] for s in a]), np.stack([s[subset] for s in b]))


def _at_least(goal: str, interval: Interval, margin: float) -> dict:
    return {
        "goal": goal,
        "difference": interval.__dict__,
        "threshold": -margin,
        "met": interval.low >= -margin,
        "mean_met": interval.mean >= -margin,
    }


def summarize_growth(
    before: list[Outcomes], after: list[Outcomes], scratch: list[Outcomes], seconds: dict[str, list[float]]
) -> dict:
    """`before`, `after` and `scratch` hold each seed's outcomes of the old version, the grown one and
    the one trained from scratch; `seconds` each seed's training time of `extend` and `scratch`."""
    old = list(before[0])
    every = list(after[0])
    full = every[-1]
    accuracies = {
        "before": {s: accuracy(before, s) for s in old},
        "after": {s: accuracy(after, s) for s in every},
        "scratch": {s: accuracy(scratch, s) for s in every},
    }
    versus_before = {s: _difference(after, before, s) for s in old}
    versus_scratch = {s: _difference(after, scratch, s) for s in every}
    goals = [
        _at_least(
            f"{s}: grown vs before growing, at least -{100 * FORGETTING_MARGIN:g} pt",
            versus_before[s],
            FORGETTING_MARGIN,
        )
        for s in old
    ]
    goals.append(
        _at_least(
            f"{full}: grown vs trained from scratch, at least -{100 * SCRATCH_MARGIN:g} pt",
            versus_scratch[full],
            SCRATCH_MARGIN,
        )
    )
    shares = [e / s for e, s in zip(seconds["extend"], seconds["scratch"], strict=True)]
    share = float(np.mean(shares))
    goals.append({
        "goal": f"training time: extend / from scratch, at most {100 * TIME_SHARE:g}%",
        "share": {"mean": share, "low": min(shares), "high": max(shares), "seeds": shares},
        "threshold": TIME_SHARE,
        "met": max(shares) <= TIME_SHARE,
        "mean_met": share <= TIME_SHARE,
    })  # fmt: skip
    return {
        "accuracy": accuracies,
        "goals": goals,
        "versus_before": {s: i.__dict__ for s, i in versus_before.items()},
        "versus_scratch": {s: i.__dict__ for s, i in versus_scratch.items()},
        "seconds": seconds,
    }
