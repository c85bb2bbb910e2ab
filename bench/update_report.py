"""bench/update.py's output: the accuracy tables and the goals as text, report.md and update.png
(accuracy per subset of modalities before the update, updated, and fine-tuned on the new data alone;
on the old test split and on the new speaker's)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from anymodal.evaluation.stats import seed_spread

from bench.grow_report import aligned, bars, diff, pct, table, timing_lines, timing_table, verdict

SYSTEMS = {
    "before": "before (v1)",
    "guarded": "updated (v2)",
    "features": "updated, features only",
    "naive": "fine-tuned (naive)",
}
NAMES = {"guarded": "updated", "features": "features only", "naive": "fine-tuned", "before": "before"}
SPLITS = {
    "new": "new speaker's test split",
    "old": "old test split (an unheard voice)",
    "heard": "heard split (held-out takes of the voices v1 trained on)",
}
STEPS = {"train": "train v1", "guarded": "update", "features": "update, features only", "naive": "fine-tune"}


def _header(summary: dict, split: str) -> list[str]:
    pairs = summary["differences"][split]
    return [
        "modalities",
        *SYSTEMS.values(),
        *(" - ".join(NAMES[s] for s in pair.split(" - ")) + ", pts" for pair in pairs),
    ]


def _rows(summary: dict, split: str) -> list[list[str]]:
    accuracy, pairs = summary["accuracy"][split], summary["differences"][split]
    return [
        [subset, *(pct(accuracy[s][subset]) for s in SYSTEMS), *(diff(pairs[p][subset]) for p in pairs)]
        for subset in accuracy["before"]
    ]


def table_lines(summary: dict) -> list[str]:
    lines = [
        "test accuracy (%), clean, gate on: mean over seeds (lowest-highest seed);"
        " differences: mean [95% paired bootstrap interval]"
    ]
    for split, title in SPLITS.items():
        lines += ["", f"{title}:", *aligned([_header(summary, split), *_rows(summary, split)])]
    return lines


def _flagged_rows(summary: dict) -> list[list[str]]:
    found = summary["flagged"]
    return [
        [condition, *(pct_of(found[system][condition]) for system in SYSTEMS)]
        for condition in found["before"]
    ]


def pct_of(values: list[float]) -> str:
    """Mean share over seeds in %, the lowest and highest seed's in parentheses."""
    mean, low, high = seed_spread(values)
    return pct({"mean": mean, "min": low, "max": high})


FLAGGED_TITLE = "heard split: the share of audio inputs the gate leaves out (%), clean and at severity 3"


def flagged_lines(summary: dict) -> list[str]:
    return [f"{FLAGGED_TITLE}:", *aligned([["input", *SYSTEMS.values()], *_flagged_rows(summary)])]


def goal_lines(summary: dict) -> list[str]:
    lines = ["goals (met only when the whole interval is on the right side of the threshold):"]
    lines += [f"  {verdict(g):22} {g['goal']}: {diff(g['difference'])}" for g in summary["goals"]]
    return lines + timing_lines(summary, STEPS, width=22)


def write_report(out: Path, summary: dict, context: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot(summary, out / "update.png")
    seeds, speaker, samples = context["seeds"], context["speaker"], context["test_samples"]
    epochs = f"; every training {context['epochs']} epochs (not the config's)" if context["epochs"] else ""
    lines = [
        f"# Updating a model with a new speaker: {speaker}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d} with seeds {', '.join(map(str, seeds))}{epochs}. Each seed trains"
        f" MLA (HGM on) on {'+'.join(context['modalities'])} without {speaker}'s recordings and without"
        " takes 40-49 of the voices it trains on (version 1; its bundle keeps replay inputs,"
        " `replay_inputs = true`). Copies of it are then updated with"
        f" {speaker}'s data: `anymodal update` (version 2: old inputs replayed through the encoders, feature"
        " distillation, batch norm statistics kept, the head through the HGM projector, replay of the"
        " reservoir's features), the same without the kept inputs (`replay_inputs=False`: what a bundle"
        " trained without them gets), and plain fine-tuning on the new data alone"
        " (`update(..., guarded=False)`, the naive baseline). All train every modality the new data has,"
        " as `anymodal update` does by default. Every bundle is evaluated through its exported ONNX"
        " files, the reliability gate (on) and the service's fusion, clean, on three splits:"
        f" {speaker}'s test takes 40-49 ({samples['new']} samples), the old test split (a voice no"
        f" version heard, {samples['old']} samples) and the heard split (takes 40-49 of the voices"
        f" version 1 trained on: what it knew, so what it can forget; {samples['heard']} samples)."
        " Accuracies are means over seeds, the lowest and highest seed in parentheses; differences are"
        " means with a 95% paired bootstrap interval over test samples, pooled across seeds. A goal is"
        " met only when its whole interval is on the right side of its threshold.",
        "",
        "```",
        context["command"],
        "```",
        "",
        "## Goals",
        "",
        *table(
            ["goal", "measured, pts", "verdict"],
            [[g["goal"], diff(g["difference"]), verdict(g)] for g in summary["goals"]],
        ),
    ]
    for split, title in SPLITS.items():
        lines += [
            "",
            f"## Test accuracy (%), {title}",
            "",
            *table(_header(summary, split), _rows(summary, split)),
        ]
    lines += [
        "",
        "## The gate after the update",
        "",
        "The share of the heard split's audio inputs each bundle's reliability gate leaves out of the"
        " fusion (p-value below alpha): clean, where it should be near alpha, and under each audio"
        " corruption family of the evaluation suite at severity 3, where higher is better. Means over"
        " seeds, the lowest and highest seed in parentheses.",
        "",
        *table(["input", *SYSTEMS.values()], _flagged_rows(summary)),
    ]
    lines += [
        "",
        "## Training time",
        "",
        "Wall seconds from config (or bundle) and data to bundle, the CPU seconds of every thread of the"
        " process in parentheses. Training version 1 decodes the test split too, as `anymodal train`"
        " does; the updates read only the new train and validation splits.",
        "",
        *timing_table(summary, seeds, STEPS),
        "",
        "![accuracy per subset](update.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def plot(summary: dict, path: Path) -> None:
    """One row per split, bars per subset for each system of SYSTEMS; whiskers span the lowest to
    the highest seed."""
    accuracy = summary["accuracy"]
    most = max(len(accuracy[split]["before"]) for split in SPLITS)
    fig, axes = plt.subplots(len(SPLITS), 1, figsize=(1.2 * most + 2, 2.6 * len(SPLITS)), sharey=True)
    for axis, (split, title) in zip(axes, SPLITS.items(), strict=True):
        subsets = list(accuracy[split]["before"])
        bars(axis, accuracy[split], subsets, SYSTEMS)
        axis.set_xticks(range(len(subsets)), subsets, fontsize=8)
        axis.set_xlim(-0.6, most - 0.4)
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("test accuracy (%)", fontsize=8)
    lowest = min(
        100 * st["min"] for by_split in accuracy.values() for by in by_split.values() for st in by.values()
    )
    axes[0].set_ylim(max(0.0, lowest - 5), 100)
    axes[0].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
