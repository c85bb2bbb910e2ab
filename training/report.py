"""The training report: the claims MLA makes, checked against the test numbers; the robustness
matrix of every system; each encoder's own accuracy; plots of training curves, the robustness
matrix and the fusion weights. Claims that do not hold are reported as such, with their numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from training.config import Config
from training.evaluate import CLEAN
from training.train import History

CLEAR_MARGIN = 0.02  # "clearly higher": at least two points of accuracy
SYSTEM_ORDER = ("mla", "mla_mean", "mla_no_hgm", "joint")


def check_claims(metrics: dict) -> list[dict]:
    """The paper's claims on this data, each with `holds` and the numbers that decide it."""
    systems = metrics["systems"]
    modalities = metrics["modalities"]
    everything = "+".join(modalities)
    mla = systems["mla"]["robustness"][everything]
    claims = []
    if "joint" in systems:
        joint = systems["joint"]["robustness"][everything][CLEAN]
        claims.append({
            "claim": "MLA with entropy fusion beats joint training with all modalities present",
            "holds": mla[CLEAN] > joint,
            "numbers": {"mla": mla[CLEAN], "joint": joint},
        })  # fmt: skip
        unimodal = metrics.get("unimodal") or {}
        own = systems["mla"]["own_accuracy"]
        weakest = min(unimodal or own, key=lambda m: (unimodal or {}).get(m, {}).get("accuracy", own[m]))
        after_mla, after_joint = own[weakest], systems["joint"]["own_accuracy"][weakest]
        claims.append({
            "claim": f"the weakest modality ({weakest}) alone is clearly more accurate after MLA than"
            f" after joint training (by at least {CLEAR_MARGIN * 100:g} points)",
            "holds": after_mla - after_joint >= CLEAR_MARGIN,
            "numbers": {"mla": after_mla, "joint": after_joint},
        })  # fmt: skip
    averaged = systems["mla_mean"]["robustness"][everything]
    for m in modalities:
        condition = f"{m} corrupted"
        claims.append({
            "claim": f"with {m} corrupted, entropy fusion beats plain averaging",
            "holds": mla[condition] > averaged[condition],
            "numbers": {"entropy": mla[condition], "mean": averaged[condition]},
        })  # fmt: skip
    return claims


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    bundle: Path,
    config: Config,
    metrics: dict,
    histories: dict[str, History],
    weights: dict[str, dict[str, np.ndarray]],
    provenance: dict,
) -> None:
    """Write report.md and its plots into `bundle`."""
    systems = {name: metrics["systems"][name] for name in SYSTEM_ORDER if name in metrics["systems"]}
    modalities = metrics["modalities"]
    everything = "+".join(modalities)
    conditions = list(systems["mla"]["robustness"][everything])
    plot_curves(histories, bundle / "training_curves.png")
    plot_robustness(systems, bundle / "robustness.png")
    plot_weights(weights, bundle / "fusion_weights.png")

    samples = metrics["samples"]
    out = [
        f"# {config.name}: training report",
        "",
        f"Trained {datetime.now(UTC):%Y-%m-%d} on {samples['train']} training, {samples['val']}"
        f" validation and {samples['test']} test samples, in {metrics['seconds']['total']:.0f} s"
        f" with {metrics['machine']['threads']} CPU threads. Checkpoints were selected on"
        " validation; the test split was read once, for this report. One seed"
        f" ({config.train.seed}): differences of a point or so are within run-to-run noise.",
        "",
    ]
    if provenance.get("command"):
        out += ["Reproduce with:", "", "```", provenance["command"], "```", ""]

    out += ["## Claims, checked on the test split", ""]
    out.append(_table(
        ["claim", "holds", "numbers (test accuracy, %)"],
        [[c["claim"], "yes" if c["holds"] else "**no**",
          ", ".join(f"{k} {_pct(v)}" for k, v in c["numbers"].items())] for c in metrics["claims"]],
    ))  # fmt: skip
    out += ["", "## Test accuracy (%) for every subset of modalities, clean inputs", ""]
    out.append(_table(
        ["modalities", *(systems[s]["description"] for s in systems)],
        [[subset, *(_pct(systems[s]["robustness"][subset][CLEAN]) for s in systems)]
         for subset in systems["mla"]["robustness"]],
    ))  # fmt: skip
    out += ["", f"## Test accuracy (%) with one modality corrupted, all of {everything} present", ""]
    out += [
        "A corrupted image is half covered and drowned in noise, a corrupted recording is 15 dB"
        " under the noise, corrupted text has half of its keystrokes wrong.",
        "",
    ]
    out.append(_table(
        ["system", *conditions],
        [[systems[s]["description"], *(_pct(systems[s]["robustness"][everything][c]) for c in conditions)]
         for s in systems],
    ))  # fmt: skip
    out += ["", "## Each encoder alone through the head (the laziness diagnostic), test accuracy (%)", ""]
    unimodal = metrics.get("unimodal") or {}
    header = ["modality", *(systems[s]["description"] for s in systems if s != "mla_mean")]
    if unimodal:
        header.append("unimodal model")
    out.append(_table(header, [
        [m, *(_pct(systems[s]["own_accuracy"][m]) for s in systems if s != "mla_mean"),
         *([_pct(unimodal[m]["accuracy"])] if unimodal else [])]
        for m in modalities
    ]))  # fmt: skip
    out += ["", "## Full robustness matrices", ""]
    for s in systems:
        out += [f"### {systems[s]['description']}", ""]
        out.append(_table(
            ["modalities", *conditions],
            [[subset, *(_pct(row[c]) for c in conditions)]
             for subset, row in systems[s]["robustness"].items()],
        ))  # fmt: skip
        out.append("")
    out += ["## Fusion weights of MLA, complete test samples (mean, 10th-90th percentile)", ""]
    out.append(_table(
        ["condition", *modalities],
        [[condition, *(f"{w[m]['mean']:.2f} ({w[m]['p10']:.2f}-{w[m]['p90']:.2f})" for m in modalities)]
         for condition, w in metrics["fusion_weights"].items()],
    ))  # fmt: skip
    out += ["", "## Training", ""]
    out.append(_table(
        ["model", "best epoch", "epochs run", "validation accuracy (%)", "seconds"],
        [[s, str(h.best_epoch), str(len(h.epochs)), _pct(h.best_val_accuracy), f"{h.seconds:.0f}"]
         for s, h in histories.items()]
        + [[f"unimodal_{m}", str(u["best_epoch"]), str(len(u["curve"])), _pct(u["val_accuracy"]),
            f"{u['seconds']:.0f}"] for m, u in unimodal.items()],
    ))  # fmt: skip
    temperatures = systems["mla"]["temperatures"]
    out += [
        "",
        "Temperatures fitted on validation: " + ", ".join(f"{m} {t:.2f}" for m, t in temperatures.items()),
        "",
        "![training curves](training_curves.png)",
        "",
        "![robustness matrix](robustness.png)",
        "",
        "![fusion weights](fusion_weights.png)",
        "",
    ]
    (bundle / "report.md").write_text("\n".join(out))


def plot_curves(histories: dict[str, History], path: Path) -> None:
    """Per model: each modality's training loss and validation accuracy by epoch."""
    fig, axes = plt.subplots(2, len(histories), figsize=(4.2 * len(histories), 6.5), squeeze=False)
    for column, (name, history) in enumerate(histories.items()):
        epochs = [e["epoch"] for e in history.epochs]
        modalities = list(history.epochs[0]["val"]["accuracy"])
        for m in modalities:
            axes[0, column].plot(
                epochs, [e["train"].get(m, {}).get("loss", np.nan) for e in history.epochs], label=m
            )
            axes[1, column].plot(epochs, [e["val"]["accuracy"][m] for e in history.epochs], label=m)
        axes[1, column].plot(
            epochs, [e["val"]["fused_accuracy"] for e in history.epochs], "k--", label="fused"
        )
        axes[1, column].axvline(history.best_epoch, color="grey", lw=0.8)
        axes[0, column].set_title(f"{name}: training loss")
        axes[1, column].set_title(f"{name}: validation accuracy")
        axes[1, column].set_xlabel("epoch")
        axes[1, column].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_robustness(systems: dict[str, dict], path: Path) -> None:
    """Heat maps of test accuracy: subsets of modalities x conditions, one per system."""
    fig, axes = plt.subplots(1, len(systems), figsize=(4.4 * len(systems), 4.6), squeeze=False)
    for axis, system in zip(axes[0], systems.values(), strict=True):
        rows = list(system["robustness"])
        columns = list(system["robustness"][rows[0]])
        values = np.array([[system["robustness"][r][c] for c in columns] for r in rows])
        axis.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            axis.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=8,
                      color="white" if value < 0.6 else "black")  # fmt: skip
        axis.set_xticks(
            range(len(columns)), [c.replace(" corrupted", "\ncorrupted") for c in columns], fontsize=7
        )
        axis.set_yticks(range(len(rows)), rows, fontsize=7)
        axis.set_title(system["description"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_weights(weights: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Histograms of each modality's fusion weight, clean and with each modality corrupted."""
    fig, axes = plt.subplots(1, len(weights), figsize=(3.6 * len(weights), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for axis, (condition, by_modality) in zip(axes[0], weights.items(), strict=True):
        for m, values in by_modality.items():
            axis.hist(values, bins=bins, alpha=0.5, label=m)
        axis.set_title(condition, fontsize=9)
        axis.set_xlabel("fusion weight")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
