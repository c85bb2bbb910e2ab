"""An updated model, measured (issue 12): the goals of `anymodal update` with data the model has not
seen (on digits, a voice it has not heard), over seeds, from the outcomes of `evaluation/growth.py`
(whether each test sample is answered right from each subset of modalities, through the exported
ONNX files, the reliability gate and the service's fusion):

- on the new data's test split, accuracy rises after the update, for every subset measured there;
- on the old test split, every subset loses at most 0.5 pt;
- plain fine-tuning on the new data alone (`update(..., guarded=False)`) forgets more than the
  guarded update: its old-split accuracy minus the guarded one's is below zero, for every subset
  with the modality the new data is new in (audio, for a new speaker).

Differences are means with a 95% paired bootstrap interval over test samples, pooled across seeds
(`evaluation/stats.py`). A goal is met only when its whole interval lies on the right side of its
threshold.
"""

from __future__ import annotations

import operator

import numpy as np
from anymodal.evaluation.growth import FORGETTING_MARGIN, Outcomes
from anymodal.evaluation.stats import Interval, paired_bootstrap, seed_spread

SYSTEMS = ("before", "guarded", "naive")  # version 1, updated, fine-tuned on the new data alone
# The differences reported, `a - b`, on the old test split and on the new data's.
OLD_DIFFERENCES = (("guarded", "before"), ("naive", "before"), ("naive", "guarded"))
NEW_DIFFERENCES = (("guarded", "before"), ("naive", "before"))
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


def accuracy(per_seed: list[Outcomes], subset: str) -> dict:
    """Mean accuracy over seeds, the lowest and highest seed's, and each seed's."""
    values = [float(np.nanmean(seed[subset])) for seed in per_seed]
    mean, low, high = seed_spread(values)
    return {"mean": mean, "min": low, "max": high, "seeds": values}


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


def summarize_update(
    old: dict[str, list[Outcomes]], new: dict[str, list[Outcomes]], modality: str, seconds: dict
) -> dict:
    """`old` and `new` hold, per system of SYSTEMS, each seed's outcomes on the old test split (every
    subset of modalities) and on the new data's test split (the subsets measured there); `modality`
    is the one the new data is new in; `seconds` each step's training time per seed."""
    old_diff, new_diff = differences(old, OLD_DIFFERENCES), differences(new, NEW_DIFFERENCES)
    goals = [
        goal(f"new data, {s}: updated - before, above 0", interval, ">", 0.0)
        for s, interval in new_diff["guarded - before"].items()
    ]
    goals += [
        goal(
            f"old test split, {s}: updated - before, at least -{100 * FORGETTING_MARGIN:g} pt",
            interval,
            ">=",
            -FORGETTING_MARGIN,
        )
        for s, interval in old_diff["guarded - before"].items()
    ]
    goals += [
        goal(f"old test split, {s}: fine-tuned - updated, below 0", interval, "<", 0.0)
        for s, interval in old_diff["naive - guarded"].items()
        if modality in s.split("+")
    ]
    return {
        "accuracy": {
            split: {
                system: {s: accuracy(outcomes[system], s) for s in outcomes[system][0]} for system in SYSTEMS
            }
            for split, outcomes in (("old", old), ("new", new))
        },
        "differences": {
            split: {pair: {s: i.__dict__ for s, i in by_subset.items()} for pair, by_subset in found.items()}
            for split, found in (("old", old_diff), ("new", new_diff))
        },
        "goals": goals,
        "seconds": seconds,
    }
