"""bench/grow.py's output: the accuracy table and the goals as text, report.md and grow.png (accuracy
per subset of modalities before growing, grown, and trained from scratch)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from anymodal.evaluation.report import diff as report_diff
from anymodal.evaluation.report import pct

SYSTEMS = {"before": "before (v1)", "after": "grown (v2)", "scratch": "from scratch"}


def diff(difference: dict) -> str:
    """A difference in points with two decimals: the goals sit at half a point."""
    return report_diff(difference, decimals=2)


def verdict(goal: dict) -> str:
    """Met with its whole interval on the right side of the threshold, by the mean only, or not."""
    if goal["met"]:
        return "met"
    return "not shown (mean only)" if goal["mean_met"] else "not met"


def _figure(goal: dict) -> str:
    if "share" in goal:
        share = goal["share"]
        return f"{100 * share['mean']:.1f}% (seeds {100 * share['low']:.1f}-{100 * share['high']:.1f}%)"
    return diff(goal["difference"])


def _rows(summary: dict) -> list[list[str]]:
    accuracy = summary["accuracy"]
    rows = []
    for subset in accuracy["after"]:
        before = accuracy["before"].get(subset)
        rows.append([
            subset,
            pct(before) if before else "",
            pct(accuracy["after"][subset]),
            pct(accuracy["scratch"][subset]),
            diff(summary["versus_before"][subset]) if before else "",
            diff(summary["versus_scratch"][subset]),
        ])  # fmt: skip
    return rows


HEADER = ["modalities", *SYSTEMS.values(), "grown - before, pts", "grown - scratch, pts"]


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as text lines, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]


def table_lines(summary: dict) -> list[str]:
    return [
        "test accuracy (%), clean, gate on: mean over seeds (lowest-highest seed);"
        " differences: mean [95% paired bootstrap interval]",
        *aligned([HEADER, *_rows(summary)]),
    ]


def goal_lines(summary: dict) -> list[str]:
    lines = ["goals (met only when the whole interval is on the right side of the threshold):"]
    lines += [f"  {verdict(g):22} {g['goal']}: {_figure(g)}" for g in summary["goals"]]
    return lines + timing_lines(summary, {step: step for step in summary["seconds"]})


def seconds(wall: dict, cpu: dict, step: str, seed: int) -> str:
    return f"{wall[step][seed]:.0f} ({cpu[step][seed]:.0f})"


def timing_lines(summary: dict, names: dict[str, str], width: int = 12) -> list[str]:
    """Each step's training seconds per seed, wall (CPU), as text; `names` by step."""
    wall, cpu = summary["seconds"], summary["cpu_seconds"]
    return ["training seconds per seed, wall (CPU):"] + [
        f"  {names[step]:{width}} " + ", ".join(seconds(wall, cpu, step, i) for i in range(len(wall[step])))
        for step in wall
    ]


def timing_table(summary: dict, seeds: list[int], names: dict[str, str]) -> list[str]:
    """The same as a markdown table, a row per seed and their mean."""
    wall, cpu = summary["seconds"], summary["cpu_seconds"]
    return table(
        ["seed", *(names[step] for step in wall)],
        [[str(seed), *(seconds(wall, cpu, step, i) for step in wall)] for i, seed in enumerate(seeds)]
        + [["mean", *(f"{np.mean(wall[step]):.0f} ({np.mean(cpu[step]):.0f})" for step in wall)]],
    )


def bars(
    axis: plt.Axes, accuracy: dict[str, dict[str, dict]], subsets: list[str], labels: dict[str, str]
) -> None:
    """Grouped bars per subset, one per system of `labels` (a system may lack some subsets);
    whiskers span the lowest to the highest seed."""
    width = 0.8 / len(labels)
    for i, (system, label) in enumerate(labels.items()):
        shown = [(j, accuracy[system][s]) for j, s in enumerate(subsets) if s in accuracy[system]]
        x = np.array([j for j, _ in shown]) + (i - (len(labels) - 1) / 2) * width
        means = np.array([100 * stat["mean"] for _, stat in shown])
        spread = np.array(
            [[m - 100 * st["min"], 100 * st["max"] - m] for m, (_, st) in zip(means, shown, strict=True)]
        )
        axis.bar(x, means, width, yerr=spread.T, capsize=2, label=label)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def write_report(out: Path, summary: dict, context: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot(summary, out / "grow.png")
    seeds, added = context["seeds"], "+".join(context["added"])
    epochs = f" and {context['epochs']} epochs (not the config's)" if context["epochs"] else ""
    lines = [
        f"# Growing a model: {'+'.join(context['modalities'])} by extending with {added}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d} with seeds {', '.join(map(str, seeds))}{epochs}. Each seed trains"
        f" MLA (HGM on) without {added} (version 1), extends it with {added} (`anymodal extend`, version"
        f" 2), and trains MLA on every modality from scratch. Every bundle is evaluated through its"
        f" exported ONNX files, the reliability gate (on) and the service's fusion on the clean test"
        f" split ({context['test_samples']} samples). Accuracies are means over seeds, the lowest and"
        " highest seed in parentheses; differences are means with a 95% paired bootstrap interval over"
        " test samples, pooled across seeds. A goal is met only when its whole interval is on the"
        " right side of its threshold.",
        "",
        "```",
        context["command"],
        "```",
        "",
        "## Goals",
        "",
        *table(
            ["goal", "measured", "verdict"], [[g["goal"], _figure(g), verdict(g)] for g in summary["goals"]]
        ),
        "",
        "## Test accuracy (%) for every subset of modalities",
        "",
        *table(HEADER, _rows(summary)),
        "",
        "## Training time",
        "",
        "Wall seconds from config and data to bundle, the CPU seconds of every thread of the process in"
        " parentheses. The goal compares wall seconds, seed by seed. Training from scratch decodes the"
        " test split too, as `anymodal train` does; `extend` reads only train and validation.",
        "",
        *timing_table(summary, seeds, {step: step for step in summary["seconds"]}),
        "",
        "![accuracy per subset](grow.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def plot(summary: dict, path: Path) -> None:
    """Bars per subset: before growing (old subsets only), grown, from scratch; whiskers span the
    lowest to highest seed."""
    accuracy = summary["accuracy"]
    subsets = list(accuracy["after"])
    fig, axis = plt.subplots(figsize=(1.3 * len(subsets) + 2, 3.6))
    bars(axis, accuracy, subsets, SYSTEMS)
    lowest = min(100 * stat["min"] for by_subset in accuracy.values() for stat in by_subset.values())
    axis.set_ylim(max(0.0, lowest - 5), 100)
    axis.set_xticks(range(len(subsets)), subsets, fontsize=7, rotation=20)
    axis.set_ylabel("test accuracy (%)")
    axis.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
