"""The growth benchmark (bench/grow.py, evaluation/growth.py): the goals' verdicts follow their
intervals, and a tiny run trains, extends, evaluates and reports end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from anymodal.evaluation.growth import summarize_growth
from anymodal.training.config import parse_config

from bench.grow import grow
from tests.test_growth import NAMES, write_data


def outcomes(rng: np.random.Generator, accuracy: dict[str, float], n: int = 2000) -> dict[str, np.ndarray]:
    return {subset: (rng.random(n) < p).astype(float) for subset, p in accuracy.items()}


def test_a_goal_is_met_only_when_its_interval_clears_the_threshold() -> None:
    rng = np.random.default_rng(0)
    before = [outcomes(rng, {"a": 0.9}) for _ in range(3)]
    kept = [{"a": seed["a"].copy()} | outcomes(rng, {"b": 0.8, "a+b": 0.95}) for seed in before]
    scratch = [{"a": seed["a"].copy(), "b": seed["b"].copy(), "a+b": seed["a+b"].copy()} for seed in kept]
    seconds = {"extend": [3.0, 3.5, 4.5], "scratch": [10.0, 10.0, 10.0]}

    summary = summarize_growth(before, kept, scratch, seconds)

    goals = {g["goal"].split(":")[0]: g for g in summary["goals"]}
    assert goals["a"]["met"] and goals["a"]["difference"]["mean"] == 0  # nothing forgotten
    assert goals["a+b"]["met"]  # as good as from scratch
    time_goal = goals["training time"]
    assert time_goal["share"]["mean"] == pytest.approx(11 / 30) and time_goal["mean_met"]
    assert not time_goal["met"]  # one seed took 45%: the range crosses 40%
    assert summary["accuracy"]["before"]["a"]["seeds"] == [float(np.mean(s["a"])) for s in before]

    forgot = [{"a": np.where(rng.random(2000) < 0.03, 0.0, s["a"])} | outcomes(rng, {"b": 0.8, "a+b": 0.95})
              for s in before]  # fmt: skip
    goals = {g["goal"].split(":")[0]: g for g in summarize_growth(before, forgot, scratch, seconds)["goals"]}
    assert not goals["a"]["met"] and not goals["a"]["mean_met"]  # about 2.7 pts lost


def test_a_tiny_growth_run_reports_every_subset(tmp_path: Path) -> None:
    write_data(tmp_path / "data", seed=0)
    config = parse_config({
        "name": "grow",
        "modalities": {"pen": {"kind": "tensor", "length": 6}, "text": {"kind": "text", "max_length": 8}},
        "labels": NAMES,
        "model": {"feature_dim": 8, "width": 4},
        "train": {"epochs": 10, "batch_size": 16, "replay_size": 64},
    })  # fmt: skip

    summary, context = grow(
        config, ["text"], tmp_path / "data", tmp_path / "out", [0, 1], 3, "python bench/grow.py"
    )

    assert list(summary["accuracy"]["before"]) == ["pen"]
    assert (
        list(summary["accuracy"]["after"])
        == list(summary["accuracy"]["scratch"])
        == ["pen", "text", "pen+text"]
    )
    assert [g["goal"].split(":")[0] for g in summary["goals"]] == ["pen", "pen+text", "training time"]
    assert len(summary["seconds"]["extend"]) == 2 and context["test_samples"] == 30
    assert (tmp_path / "out" / "grown" / "seed-1" / "2" / "manifest.json").is_file()
    assert "## Goals" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "grow.png").stat().st_size > 0
