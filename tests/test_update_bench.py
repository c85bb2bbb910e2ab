"""The update benchmark (bench/update.py, evaluation/update.py): the goals' verdicts follow their
intervals, and data built with other options is refused. (bench/update.py itself trains and exports
three bundles per seed; tests/test_growth.py runs `update` on a tiny model.)"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from anymodal.evaluation.update import summarize_update
from anymodal.training.digits import DigitsOptions

from bench.update import ensure_digits
from bench.update_report import flagged_lines, write_report


def seeds(rng: np.random.Generator, accuracy: dict[str, float], n: int = 2000) -> list[dict[str, np.ndarray]]:
    return [{s: (rng.random(n) < p).astype(float) for s, p in accuracy.items()} for _ in range(3)]


def forget(rng: np.random.Generator, outcomes: list[dict[str, np.ndarray]], rate: float) -> list[dict]:
    """A copy of `outcomes` with about `rate` of the right answers turned wrong."""
    return [{s: np.where(rng.random(len(o)) < rate, 0.0, o) for s, o in seed.items()} for seed in outcomes]


def test_the_update_goals_follow_their_intervals(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("old", "heard"):
        before = seeds(rng, {"a": 0.8, "b": 0.7, "a+b": 0.9})
        splits[split] = {
            "before": before,
            "guarded": [{s: o.copy() for s, o in seed.items()} for seed in before],  # nothing forgotten
            "features": forget(rng, before, 0.02),
            "naive": forget(rng, before, 0.05),  # about 4 pts forgotten
        }
    splits["new"] = {
        "before": seeds(rng, {"a": 0.5, "a+b": 0.8}),
        "guarded": seeds(rng, {"a": 0.7, "a+b": 0.8}),
        "features": seeds(rng, {"a": 0.7, "a+b": 0.8}),
        "naive": seeds(rng, {"a": 0.75, "a+b": 0.85}),
    }
    seconds = {"train": [10.0] * 3, "guarded": [3.0] * 3, "features": [3.0] * 3, "naive": [2.0] * 3}

    summary = summarize_update(splits, "a", seconds)

    goals = {g["goal"]: g for g in summary["goals"]}
    assert goals["new split, a: updated - before, above 0"]["met"]
    assert not goals["new split, a+b: updated - before, above 0"]["met"]  # the same accuracy: not shown
    assert all(
        goals[f"{split} split, {s}: updated - before, at least -0.5 pt"]["met"]
        for split in ("old", "heard")
        for s in ("a", "b", "a+b")
    )
    assert goals["heard split, a: fine-tuned - updated, below 0"]["met"]
    assert goals["heard split, a+b: fine-tuned - updated, below 0"]["met"]
    assert "heard split, b: fine-tuned - updated, below 0" not in goals  # b is not the new modality
    assert not any("features" in g for g in goals)  # measured beside, without goals
    assert summary["differences"]["heard"]["naive - guarded"]["b"]["high"] < 0
    assert summary["differences"]["old"]["features - before"]["a"]["mean"] < 0
    assert summary["accuracy"]["new"]["guarded"]["a"]["seeds"] == [
        float(np.mean(s["a"])) for s in splits["new"]["guarded"]
    ]

    summary["cpu_seconds"] = seconds
    summary["flagged"] = {
        system: {"clean": [0.01, 0.02, 0.01], "audio:tone:3": [1.0, 0.9, 1.0]} for system in splits["new"]
    }
    context = {"command": "python bench/update.py", "seeds": [0, 1, 2], "epochs": None, "speaker": "v",
               "modality": "a", "modalities": ["a", "b"], "test_samples": {s: 2000 for s in splits}}  # fmt: skip
    write_report(tmp_path, summary, context)
    report = (tmp_path / "report.md").read_text()
    assert "| audio:tone:3 | 96.7 (90.0-100.0) |" in report and (tmp_path / "update.png").stat().st_size
    assert "heard split: the share" in "\n".join(flagged_lines(summary))

    splits["heard"]["guarded"] = forget(rng, splits["heard"]["before"], 0.03)
    goals = {g["goal"]: g for g in summarize_update(splits, "a", seconds)["goals"]}
    assert not goals["heard split, b: updated - before, at least -0.5 pt"]["mean_met"]  # about 2 pts lost
    assert goals["old split, b: updated - before, at least -0.5 pt"]["met"]


def test_data_built_with_other_options_is_refused(tmp_path: Path) -> None:
    options = DigitsOptions(exclude_speakers=("yweweler",))
    (tmp_path / "digits.json").write_text(json.dumps({"options": asdict(options)}))

    ensure_digits(tmp_path / "no-source", tmp_path, options)  # there already: nothing is built
    with pytest.raises(ValueError, match="exclude_speakers, only_speaker"):
        ensure_digits(tmp_path / "no-source", tmp_path, DigitsOptions(only_speaker="yweweler"))
