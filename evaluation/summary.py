"""The numbers a report states, from the robustness matrices of every system at every seed: mean
accuracies with their spread over seeds, the goals the service is held to, and the comparisons
between systems, each with a 95% paired bootstrap interval. A claim holds only when its interval
excludes zero (or, for a goal, lies on the right side of its margin)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from anymodal.evaluation.robustness import CLEAN, Cell, parse_condition
from anymodal.evaluation.stats import Interval, expected_calibration_error, paired_bootstrap, seed_spread

Results = dict[str, list[dict[tuple[tuple[str, ...], str], Cell]]]  # variant -> per seed -> cells
VARIANTS = {
    "mla": "MLA, gate on",
    "mla_no_gate": "MLA, gate off",
    "mla_no_hgm": "MLA without HGM, gate on",
    "joint": "joint training, gate on",
}


def _correct(results: Results, variant: str, subset: tuple[str, ...], conditions: list[str]) -> np.ndarray:
    """(seeds, N): per seed and test sample, the share of `conditions` answered right; NaN for
    samples that have none of the subset's modalities."""
    out = []
    for cells in results[variant]:
        cell = cells[(subset, conditions[0])]
        row = np.full(cell.samples, np.nan)
        row[cell.rows] = np.mean([cells[(subset, c)].correct for c in conditions], axis=0)
        out.append(row)
    return np.stack(out)


def accuracy(results: Results, variant: str, subset: tuple[str, ...], conditions: list[str]) -> dict:
    per_seed = np.nanmean(_correct(results, variant, subset, conditions), axis=1)
    mean, low, high = seed_spread(list(per_seed))
    return {"mean": mean, "min": low, "max": high, "seeds": per_seed.tolist()}


def corrupting(results: Results, modality: str, family: str | None = None) -> list[str]:
    """The conditions of the full set that corrupt `modality` (of one family, if given)."""
    conditions = {c for cells in results["mla"] for (_, c) in cells}
    return sorted(
        c
        for c in conditions
        if (p := parse_condition(c)) is not None and p[0] == modality and family in (None, p[1])
    )


def families_of(results: Results, modality: str) -> list[str]:
    return sorted({parse_condition(c)[1] for c in corrupting(results, modality)})  # type: ignore[index]


def compare(
    results: Results,
    a: tuple[str, tuple[str, ...], list[str]],
    b: tuple[str, tuple[str, ...], list[str]],
) -> Interval:
    """Accuracy of a minus accuracy of b, each (variant, subset, conditions), paired by sample."""
    return paired_bootstrap(_correct(results, *a), _correct(results, *b))


def _spread(values: list[float]) -> dict[str, float]:
    return dict(zip(("mean", "min", "max"), seed_spread(values), strict=True))


def _flag_rate(cell: Cell, columns: int | slice) -> float:
    """The share of the present inputs (of one modality, or all) the gate flagged."""
    return float(cell.flagged[:, columns].sum() / max(cell.present[:, columns].sum(), 1))


def summarize(results: Results, modalities: list[str], hgm_kept: dict[str, list[float]]) -> dict:
    full = tuple(modalities)
    out: dict = {"matrix": defaultdict(dict), "goals": [], "comparisons": [], "calibration": {}, "gate": {}}
    for variant in results:
        for subset in dict.fromkeys(s for (s, _) in results[variant][0]):  # smallest subsets first
            name = "+".join(subset)
            out["matrix"][variant][name] = {CLEAN: accuracy(results, variant, subset, [CLEAN])}
            for m in subset:
                for family in families_of(results, m):
                    for condition in corrupting(results, m, family):
                        out["matrix"][variant][name][condition] = accuracy(
                            results, variant, subset, [condition]
                        )
                    out["matrix"][variant][name][f"{m}:{family}"] = accuracy(
                        results, variant, subset, corrupting(results, m, family)
                    )
                out["matrix"][variant][name][f"{m}:all"] = accuracy(
                    results, variant, subset, corrupting(results, m)
                )

    def goal(text: str, interval: Interval, margin: float) -> None:
        out["goals"].append(
            {"goal": text, "difference": interval.__dict__, "margin": margin, "met": interval.mean >= -margin,
             "sure": interval.low >= -margin}
        )  # fmt: skip

    best = max(modalities, key=lambda m: accuracy(results, "mla", (m,), [CLEAN])["mean"])
    goal(
        f"all modalities clean vs the best single modality ({best}): at least -1 pt",
        compare(results, ("mla", full, [CLEAN]), ("mla", (best,), [CLEAN])),
        0.01,
    )
    for m in modalities if len(modalities) > 1 else []:
        rest = tuple(x for x in modalities if x != m)
        goal(
            f"{m} corrupted (mean of every family and severity) vs without {m}: at least -2 pts",
            compare(results, ("mla", full, corrupting(results, m)), ("mla", rest, [CLEAN])),
            0.02,
        )
        for family in families_of(results, m):
            goal(
                f"{m} corrupted by {family} vs without {m}: at least -6 pts",
                compare(results, ("mla", full, corrupting(results, m, family)), ("mla", rest, [CLEAN])),
                0.06,
            )
    goal(
        "the gate's cost on clean inputs, all modalities: at least -0.5 pt",
        compare(results, ("mla", full, [CLEAN]), ("mla_no_gate", full, [CLEAN])),
        0.005,
    )

    everything_corrupted = [c for m in modalities for c in corrupting(results, m)]
    pairs = [
        ("mla", "joint", "MLA beats joint training"),
        ("mla", "mla_no_hgm", "HGM helps (MLA against MLA without HGM)"),
        ("mla", "mla_no_gate", "the gate helps"),
    ]
    for a, b, claim in pairs:
        if a not in results or b not in results:
            continue
        for label, conditions in (
            ("clean, all modalities", [CLEAN]),
            ("one modality corrupted", everything_corrupted),
        ):
            interval = compare(results, (a, full, conditions), (b, full, conditions))
            out["comparisons"].append({
                "claim": f"{claim}: {label}", "difference": interval.__dict__, "holds": interval.low > 0,
                "opposite_holds": interval.high < 0,
            })  # fmt: skip
        for m in modalities:
            interval = compare(results, (a, (m,), [CLEAN]), (b, (m,), [CLEAN]))
            out["comparisons"].append({
                "claim": f"{claim}: {m} alone", "difference": interval.__dict__, "holds": interval.low > 0,
                "opposite_holds": interval.high < 0,
            })  # fmt: skip

    for condition in [CLEAN, *everything_corrupted]:
        eces = [
            expected_calibration_error(cells[(full, condition)].scores, cells[(full, condition)].correct)
            for cells in results["mla"]
        ]
        out["calibration"][condition] = _spread(eces)
    clean_cells = [cells[(full, CLEAN)] for cells in results["mla"]]
    out["gate"]["all:clean"] = _spread([_flag_rate(cell, slice(None)) for cell in clean_cells])
    for i, m in enumerate(modalities):
        out["gate"][f"{m}:clean"] = _spread([_flag_rate(cell, i) for cell in clean_cells])
        for family in families_of(results, m):
            rates = [
                np.mean([_flag_rate(cells[(full, c)], i) for c in corrupting(results, m, family)])
                for cells in results["mla"]
            ]
            out["gate"][f"{m}:{family}"] = _spread(rates)
    out["hgm_kept"] = hgm_kept
    out["best_single_modality"] = best
    out["matrix"] = dict(out["matrix"])
    return out
