"""An updated model, measured (issue 12): the goals of `anymodal update` with data the model has not
seen (on digits, a voice it has not heard), over seeds, from the outcomes of `evaluation/growth.py`
(whether each test sample is answered right from each subset of modalities, through the exported
ONNX files, the reliability gate and the service's fusion). Three test splits:

- `new`: the new data's (the new voice's held-out takes);
- `old`: the old test split (on digits a voice no version heard: what the model generalizes to);
- `heard`: held-out takes of the voices version 1 trained on: what it knew, so what it can forget.

The goals, for the guarded update (`update`, with the inputs the bundle keeps):
- on the new split, accuracy rises, for every subset measured there;
- on the old and the heard split, every subset loses at most 0.5 pt;
- plain fine-tuning on the new data alone (`update(..., guarded=False)`) forgets more: on the heard
  split, its accuracy minus the guarded one's is below zero for every subset with the modality the
  new data is new in (audio, for a new speaker).
The update without kept inputs (`features`) is measured beside them, without goals.

Differences are means with a 95% paired bootstrap interval over test samples, pooled across seeds
(`evaluation/stats.py`). A goal is met only when its whole interval lies on the right side of its
threshold.
"""

from __future__ import annotations

import operator

import numpy as np
from anymodal.evaluation.growth import FORGETTING_MARGIN, Outcomes, accuracy
from anymodal.evaluation.stats import Interval, paired_bootstrap

# version 1; updated (with kept inputs); updated from features alone; fine-tuned on the new data alone
SYSTEMS = ("before", "guarded", "features", "naive")
SPLITS = ("new", "old", "heard")
# The differences reported per split, `a - b`.
NEW_DIFFERENCES = (("guarded", "before"), ("features", "before"), ("naive", "before"))
OLD_DIFFERENCES = (*NEW_DIFFERENCES, ("naive", "guarded"))
_CHECKS = {">": operator.gt, ">=": operator.ge, "<": operator.lt}


def goal(text: str, interval: Interval, side: str, threshold: float) -> dict:
    """Met when the whole interval lies on `side` ('>', '>=' or '<') of `threshold`; `mean_met` when
    its mean does."""
    check = _CHECKS[side]
    bound = interval.high if side == "<" else interval.low
    return {
        "goal": text,
        "difference": interval.__dict__,
        "side": side,
        "threshold": threshold,
        "met": bool(check(bound, threshold)),
        "mean_met": bool(check(interval.mean, threshold)),
    }


def differences(
    systems: dict[str, list[Outcomes]], pairs: tuple[tuple[str, str], ...]
) -> dict[str, dict[str, Interval]]:
    """For each pair (a, b), per subset: accuracy of a - b, with its paired bootstrap interval."""
    subsets = list(systems["before"][0])
    return {
        f"{a} - {b}": {
            s: paired_bootstrap(np.stack([o[s] for o in systems[a]]), np.stack([o[s] for o in systems[b]]))
            for s in subsets
        }
        for a, b in pairs
    }


def summarize_update(splits: dict[str, dict[str, list[Outcomes]]], modality: str, seconds: dict) -> dict:
    """`splits` holds, per split of SPLITS and system of SYSTEMS, each seed's outcomes (per subset of
    modalities measured on that split); `modality` is the one the new data is new in; `seconds` each
    step's training time per seed."""
    found = {
        split: differences(splits[split], NEW_DIFFERENCES if split == "new" else OLD_DIFFERENCES)
        for split in SPLITS
    }
    goals = [
        goal(f"new split, {s}: updated - before, above 0", interval, ">", 0.0)
        for s, interval in found["new"]["guarded - before"].items()
    ]
    margin = f"at least -{100 * FORGETTING_MARGIN:g} pt"
    goals += [
        goal(f"{split} split, {s}: updated - before, {margin}", interval, ">=", -FORGETTING_MARGIN)
        for split in ("old", "heard")
        for s, interval in found[split]["guarded - before"].items()
    ]
    goals += [
        goal(f"heard split, {s}: fine-tuned - updated, below 0", interval, "<", 0.0)
        for s, interval in found["heard"]["naive - guarded"].items()
        if modality in s.split("+")
    ]
    return {
        "accuracy": {
            split: {system: {s: accuracy(runs[system], s) for s in runs[system][0]} for system in SYSTEMS}
            for split, runs in splits.items()
        },
        "differences": {
            split: {pair: {s: i.__dict__ for s, i in by_subset.items()} for pair, by_subset in pairs.items()}
            for split, pairs in found.items()
        },
        "goals": goals,
        "seconds": seconds,
    }
