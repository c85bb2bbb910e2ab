"""`report.md` and its plots: the goals, the comparisons between systems with their intervals, the
robustness matrices, calibration, the gate's flag rates and HGM's kept share, all from the
summary of every seed (`evaluation/summary.py`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from anymodal.evaluation.robustness import CLEAN
from anymodal.evaluation.summary import VARIANTS


def pct(stat: dict) -> str:
    """A share over seeds in %: the mean, the lowest and highest seed's in parentheses."""
    return f"{100 * stat['mean']:.1f} ({100 * stat['min']:.1f}-{100 * stat['max']:.1f})"


def diff(difference: dict, decimals: int = 1) -> str:
    """A difference in points: the mean and its interval."""
    mean, low, high = (100 * difference[k] for k in ("mean", "low", "high"))
    return f"{mean:+.{decimals}f} [{low:+.{decimals}f}, {high:+.{decimals}f}]"


def _verdict(goal: dict) -> str:
    """Met with its whole interval above the margin, met by the mean only, or not met."""
    if not goal["met"]:
        return "**no**"
    return "yes" if goal["sure"] else "yes (mean only)"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_report(bundle: Path, summary: dict, context: dict) -> None:
    """Write report.md, robustness.png and hgm.png into `bundle`."""
    modalities = context["modalities"]
    full = "+".join(modalities)
    variants = [v for v in VARIANTS if v in summary["matrix"]]
    matrix = summary["matrix"]
    plot_robustness(matrix, variants, full, modalities, bundle / "robustness.png")
    plot_hgm(summary["hgm_kept"], bundle / "hgm.png")
    seeds = context["seeds"]
    out = [
        f"# {context['name']}: evaluation report",
        "",
        f"Evaluated {datetime.now(UTC):%Y-%m-%d} on {context['test_samples']} test samples, through the"
        " exported ONNX bundles, the service's reliability gate and its fusion: the answers users get."
        f" Every figure is the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}), with the"
        " lowest and highest seed in parentheses. Differences come with a 95% paired bootstrap"
        " interval over test samples (seeds averaged); a claim holds only when its interval excludes"
        f" zero. The published bundle is seed {context['chosen_seed']}, the one with the lowest fused"
        " validation NLL. Corruptions come from the frozen evaluation suite (`evaluation/corruptions.py`),"
        " which training never sees.",
        "",
    ]
    if context.get("command"):
        out += ["Reproduce with:", "", "```", context["command"], "```", ""]
    out += ["## Goals (MLA with the gate)", ""]
    out.append(_table(
        ["goal", "difference, pts [95% interval]", "met"],
        [[g["goal"], diff(g["difference"]), _verdict(g)] for g in summary["goals"]],
    ))  # fmt: skip
    ece = summary["calibration"]
    worst = max((c for c in ece if c != CLEAN), key=lambda c: ece[c]["mean"], default=CLEAN)
    out += [
        "",
        f"Expected calibration error of the answer's score, all modalities clean: {pct(ece[CLEAN])}%"
        f" (goal: at most 5%). Worst under a corruption: {worst}, {pct(ece[worst])}%.",
        "",
        "Share of clean test inputs the gate flags as unreliable (goal: at most 2%): "
        + ", ".join(f"{m} {pct(summary['gate'][f'{m}:clean'])}%" for m in modalities)
        + f"; all inputs together {pct(summary['gate']['all:clean'])}%.",
        "",
        "## Comparisons",
        "",
    ]
    out.append(_table(
        ["comparison", "difference, pts [95% interval]", "verdict"],
        [[c["claim"], diff(c["difference"]),
          "holds" if c["holds"] else ("**the opposite holds**" if c["opposite_holds"] else "not shown")]
         for c in summary["comparisons"]],
    ))  # fmt: skip
    out += ["", "## Test accuracy (%) for every subset of modalities, clean", ""]
    out.append(_table(
        ["modalities", *(VARIANTS[v] for v in variants)],
        [[s, *(pct(matrix[v][s][CLEAN]) for v in variants)] for s in matrix["mla"]],
    ))  # fmt: skip
    out += ["", f"## Test accuracy (%), all of {full} present, one corrupted (mean over 3 severities)", ""]
    families = [key for key in matrix["mla"][full] if key.count(":") == 1]
    out.append(_table(
        ["corrupted", *(VARIANTS[v] for v in variants), "gate flags (%)"],
        [[key, *(pct(matrix[v][full][key]) for v in variants),
          pct(summary["gate"][key]) if key in summary["gate"] else ""] for key in families],
    ))  # fmt: skip
    out += ["", "## Each subset with one of its modalities corrupted (mean over families and severities)", ""]
    out.append(_table(
        ["modalities", "corrupted", *(VARIANTS[v] for v in variants)],
        [[s, m, *(pct(matrix[v][s][f"{m}:all"]) for v in variants)]
         for s in matrix["mla"] for m in s.split("+") if len(s.split("+")) > 1],
    ))  # fmt: skip
    out += ["", "## The reliability gate on clean test inputs", ""]
    out.append(_table(
        ["modality", "flagged as unreliable (%)"],
        [[m, pct(summary["gate"][f"{m}:clean"])] for m in modalities],
    ))  # fmt: skip
    out += ["", "## Calibration under each corruption (ECE of the answer's score, %)", ""]
    out.append(_table(["condition", "ECE"], [[c, pct(v)] for c, v in ece.items()]))
    kept = summary["hgm_kept"]
    out += [
        "",
        "## HGM: share of the head gradient's norm it keeps (mean over seeds)",
        "",
        _table(
            ["modality", "first epoch", "last epoch", "lowest"],
            [[m, f"{v[0]:.2f}", f"{v[-1]:.2f}", f"{min(v):.2f}"] for m, v in kept.items()],
        ),
        "",
        "![HGM kept share](hgm.png)",
        "",
        "![robustness](robustness.png)",
        "",
    ]
    (bundle / "report.md").write_text("\n".join(out))


def plot_robustness(matrix: dict, variants: list[str], full: str, modalities: list[str], path: Path) -> None:
    """Heat maps, one per system: corrupted modality and family x severity, all modalities present."""
    rows = [key for key in matrix["mla"][full] if key.count(":") == 2]
    names = sorted(
        {key.rsplit(":", 1)[0] for key in rows}, key=lambda k: (modalities.index(k.split(":")[0]), k)
    )
    severities = sorted({int(key.rsplit(":", 1)[1]) for key in rows})
    fig, axes = plt.subplots(
        1, len(variants), figsize=(3.2 * len(variants), 0.28 * len(names) + 1.6), squeeze=False
    )
    for axis, variant in zip(axes[0], variants, strict=True):
        values = np.array([[matrix[variant][full][f"{n}:{s}"]["mean"] for s in severities] for n in names])
        axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            axis.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=6,
                      color="white" if value < 0.6 else "black")  # fmt: skip
        axis.set_xticks(range(len(severities)), [f"severity {s}" for s in severities], fontsize=6)
        axis.set_yticks(range(len(names)), names if variant == variants[0] else [], fontsize=6)
        axis.set_title(VARIANTS[variant], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_hgm(kept: dict[str, list[float]], path: Path) -> None:
    fig, axis = plt.subplots(figsize=(5, 3))
    for m, values in kept.items():
        axis.plot(range(1, len(values) + 1), values, label=m)
    axis.set_ylim(0, 1)
    axis.set_xlabel("epoch")
    axis.set_ylabel("share of head gradient kept")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
