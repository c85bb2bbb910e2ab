"""The command-line client's answers as readable text: predictions, model listings, bundles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NOT_RELIABLE = "not reliable: every input failed the reliability gate; the answer was fused from them anyway"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        (indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        for row in [header, *rows]
    ]


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def prediction_text(answer: dict[str, Any]) -> str:
    """A /v1 answer (one instance or a batch) as one block per instance: the label and score, then
    one row per modality."""
    model = answer["model"]
    head = f"model {model['name']} version {model['version']}{_grown(model)}, {answer['fusion']} fusion"
    if "predictions" not in answer:
        return "\n".join([head, *_instance(answer, "")])
    lines = [head]
    for i, prediction in enumerate(answer["predictions"]):
        lines += _instance(prediction, f"instance {i}: ")
    return "\n".join(lines)


def _grown(model: dict[str, Any]) -> str:
    """` (extend of version 1, added audio)` for a version grown from another; empty otherwise."""
    if "step" not in model:
        return ""
    added = f", added {', '.join(model['added'])}" if model.get("added") else ""
    return f" ({model['step']} of version {model['grew_from']}{added})"


def _instance(prediction: dict[str, Any], prefix: str) -> list[str]:
    rows, notes = [], []
    for name, report in prediction["modalities"].items():
        gate = report.get("reliability") or {}
        rows.append(
            [
                name,
                report["state"],
                _number(report.get("weight")) if report["state"] != "missing" else "-",
                report.get("label", "-"),
                _number(report.get("confidence")),
                _number(gate.get("p_value")) + (" cropped" if report.get("cropped") else ""),
            ]
        )
        if report.get("reason"):
            notes.append(f"  {name} {report['state']}: {report['reason']}")
    lines = [f"{prefix}{prediction['label']}  score {prediction['score']:.4f}"]
    lines += table(["modality", "state", "weight", "label", "confidence", "p-value"], rows)
    lines += notes
    if not prediction.get("reliable", True):
        lines.append(f"  {NOT_RELIABLE}")
    return lines


def models_text(listing: dict[str, Any]) -> str:
    if not listing["models"]:
        return "no model"
    rows = [
        [
            row["name"] + (" (default)" if row["name"] == listing.get("default_model") else ""),
            ", ".join(str(v) for v in row["versions"]),
            str(row["labels"]),
            ", ".join(f"{m} ({kind})" for m, kind in row["modalities"].items()),
        ]
        for row in listing["models"]
    ]
    return "\n".join(table(["name", "versions", "labels", "modalities"], rows, indent=""))


def contract_text(contract: dict[str, Any]) -> str:
    """An input contract in a few words: what an input must be."""
    kind = contract["kind"]
    if kind == "image":
        return f"{contract['width']}x{contract['height']} {contract['mode']}"
    if kind == "audio":
        return (
            f"{contract['sample_rate']} Hz, at most {contract['max_seconds']:g} s"
            f" (longer: {contract['too_long']}), {contract['n_mels']} mels"
        )
    if kind == "text":
        return f"at most {contract['max_length']} bytes of UTF-8"
    return f"{contract['length']} numbers"


def _flat(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def bundle_text(info: dict[str, Any]) -> str:
    labels = info["labels"]
    lines = [f"{info['name']} version {info['version']} ({info['bundle']})"]
    lines.append(f"labels ({len(labels)}): {' '.join(labels)}")
    lines.append("modalities:")
    rows = [
        [
            m,
            spec["input"]["kind"],
            contract_text(spec["input"]),
            _number(spec["temperature"]),
            _number(spec["reliability_alpha"]),
        ]
        for m, spec in info["modalities"].items()
    ]
    lines += table(["modality", "kind", "input", "temperature", "gate alpha"], rows)
    fusion = info["fusion"]
    temperatures = fusion.get("temperatures")
    lines.append(
        f"fusion: {fusion['rule']}"
        + (f", count temperatures {', '.join(f'{t:.3f}' for t in temperatures)}" if temperatures else "")
    )
    training = {k: v for k, v in info["training"].items() if v is not None}
    command = training.pop("command", None)
    lines.append(f"training: {_flat(training) or 'no record'}")
    if command:
        lines.append(f"  command: {command}")
    metrics = info["metrics"]
    lines.append(f"test metrics: {_flat({k: v for k, v in metrics.items() if not isinstance(v, dict)})}")
    lines += [f"  {k}: {_flat(v)}" for k, v in metrics.items() if isinstance(v, dict)]
    lines += _lineage(info["lineage"], info["growth"])
    files = info["files"]
    verdict = "every sha256 verifies" if files["verified"] else f"FAILED: {files['problem']}"
    lines.append(f"files: {files['count']}, {verdict}")
    return "\n".join(lines)


def _lineage(steps: list[dict[str, Any]], growth: dict[str, Any] | None) -> list[str]:
    """The steps that made a bundle, oldest first, and whether it can grow; nothing for a bundle
    without them."""
    lines = []
    if steps:
        rows = [
            [
                s["step"],
                str(s["version"]),
                "-" if s["from_version"] is None else str(s["from_version"]),
                ", ".join(s["added"]) or "-",
                ", ".join(s["trained"]) or "-",
                s["at"],
            ]
            for s in steps
        ]
        lines += ["lineage:", *table(["step", "version", "from", "added", "trained", "at"], rows)]
    if growth is not None:
        lines.append(
            f"growth: keeps at most {growth['replay_size']} training samples per modality (as features"
            f"{' and encoder inputs' if growth.get('replay_kind') == 'features+inputs' else ''}) to replay"
        )
    return lines
