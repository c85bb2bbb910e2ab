"""Two versions of a model on the same test splits (`anymodal compare BEFORE AFTER --test FILE`): what
a step of growth (`extend`, `update`) gained and what it forgot, per subset of modalities.

Each test sample is answered as the service would answer it, through the bundle's ONNX files, its
reliability gate and its fusion (`evaluation/growth.py`), clean. The difference after - before
comes with a 95% paired bootstrap interval over the test samples: one pair of versions is one
seed, so the interval covers the test samples' noise, not training's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anymodal.evaluation.growth import TestSplit, outcomes
from anymodal.evaluation.stats import paired_bootstrap
from anymodal.service.manifest import read_manifest


class CompareError(Exception):
    pass


def compare_versions(before: Path, after: Path, test: Path) -> dict[str, dict]:
    """Per subset of `after`'s modalities that some sample of `test` has: its sample count, the
    accuracy of `after`, and, where `before` has every modality of the subset, its accuracy and
    the difference after - before (mean, low, high)."""
    old, new = read_manifest(before), read_manifest(after)
    if old.labels != new.labels:
        raise CompareError(f"{before} and {after} do not answer the same labels")
    if missing := [m for m in old.modalities if m not in new.modalities]:
        raise CompareError(
            f"{after} lacks {', '.join(missing)}: give the version with more modalities second"
        )
    split = TestSplit(test, after)
    order = list(new.modalities)
    answered_after, answered_before = outcomes(after, split, order), outcomes(before, split, order)
    rows = {}
    for subset, right in answered_after.items():
        covered = ~np.isnan(right)
        if not covered.any():
            continue
        row: dict = {"samples": int(covered.sum()), "after": float(right[covered].mean())}
        if subset in answered_before:
            earlier = answered_before[subset]
            row["before"] = float(earlier[covered].mean())
            row["difference"] = paired_bootstrap(right[None], earlier[None]).__dict__
        rows[subset] = row
    return rows


def compare_lines(results: dict[str, dict[str, dict]]) -> list[str]:
    """`results` by test file, as text: accuracy (%) before and after, and the difference in points."""
    lines = []
    for test, rows in results.items():
        table = [["modalities", "samples", "before", "after", "after - before, pts [95%]"]]
        for subset, row in rows.items():
            difference = row.get("difference")
            table.append([
                subset,
                str(row["samples"]),
                f"{100 * row['before']:.1f}" if "before" in row else "-",
                f"{100 * row['after']:.1f}",
                "-" if difference is None else "{:+.2f} [{:+.2f}, {:+.2f}]".format(
                    *(100 * difference[k] for k in ("mean", "low", "high"))
                ),
            ])  # fmt: skip
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines += [
            f"{test}:",
            *("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table),
            "",
        ]
    return lines[:-1]
