"""Command line of the training package: `anymodal build-digits`, also runnable as
`python -m anymodal.training ...`. Training itself (`anymodal train`, `train-digits`) is run by
`evaluation/cli.py`, which trains, evaluates and publishes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

DIGITS_CONFIG = Path(__file__).with_name("digits.toml")
DEFAULT_SOURCE = Path("../shared/data")


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def build_digits(
    source: Annotated[
        Path, typer.Option(help="Folder with fsdd/ and optdigits/ (the raw data).")
    ] = DEFAULT_SOURCE,
    out: Annotated[Path, typer.Option(help="Where to write the JSONL splits, images and recordings.")] = Path(
        "data/digits"
    ),
    seed: Annotated[int, typer.Option(help="Fixes every random choice.")] = 0,
    test_speaker: Annotated[str, typer.Option(help="The FSDD speaker held out for the test split.")] = "theo",
    val_speaker: Annotated[str, typer.Option(help="The FSDD speaker held out for validation.")] = "george",
    limit: Annotated[
        int | None, typer.Option(help="At most this many samples per split (quick runs).")
    ] = None,
    train_missing: Annotated[
        float, typer.Option(help="Each modality of a training sample is missing this often.")
    ] = 0.1,
    exclude_speakers: Annotated[
        str, typer.Option(help="Comma-separated FSDD speakers left out of every split.")
    ] = "",
    only_speaker: Annotated[
        str | None,
        typer.Option(help="Every split's audio from this speaker only, by take (0-29, 30-39, 40-49)."),
    ] = None,
    heard_takes: Annotated[
        int,
        typer.Option(
            help="The last N takes of every training speaker make a test_heard split instead of training."
        ),
    ] = 0,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Build the bundled `digits` benchmark (spoken, handwritten and typed digits) from raw data."""
    from anymodal.training.digits import DigitsOptions, SourceError, build_digits

    try:
        build_digits(
            source,
            out,
            DigitsOptions(
                seed=seed,
                test_speaker=test_speaker,
                val_speaker=val_speaker,
                limit=limit,
                train_missing=train_missing,
                exclude_speakers=tuple(s.strip() for s in exclude_speakers.split(",") if s.strip()),
                only_speaker=only_speaker,
                heard_takes=heard_takes,
            ),
            not quiet,
        )
    except (SourceError, OSError) as error:
        raise _fail(f"build-digits: {error}") from None


def extend(
    bundle: Annotated[Path, typer.Argument(help="The bundle to grow: <repository>/<name>/<version>.")],
    add: Annotated[Path, typer.Option(help="A config (TOML) naming the modalities to add.")],
    data: Annotated[Path, typer.Option(help="JSONL splits with the new modalities (and the old ones).")],
    seed: Annotated[int, typer.Option(help="Fixes every random choice.")] = 0,
    skip_bad_rows: Annotated[bool, typer.Option(help="Leave out unreadable rows, not fail.")] = False,
) -> None:
    """Add modalities to a model: train only their encoders, the shared head through HGM's projector
    with a replay of the old modalities, and write the new version next to the old one."""
    from anymodal.service.manifest import BundleError
    from anymodal.training.config import ConfigError, load_config
    from anymodal.training.dataset import DatasetError
    from anymodal.training.extend import extend as extend_bundle
    from anymodal.training.growth import GrowthError

    try:
        out = extend_bundle(bundle, load_config(add), data, seed, skip_bad_rows)
    except (BundleError, ConfigError, DatasetError, GrowthError, OSError) as error:
        raise _fail(f"extend: {error}") from None
    typer.echo(f"wrote {out}; a server polling the repository serves it as version {out.name}")


def update(
    bundle: Annotated[
        Path, typer.Argument(help="The bundle to train further: <repository>/<name>/<version>.")
    ],
    data: Annotated[Path, typer.Option(help="JSONL splits (train, val) of the new samples.")],
    modalities: Annotated[
        str | None, typer.Option(help="Comma-separated modalities to train; default: those the data has.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs at most; default: the bundle's own.")] = None,
    seed: Annotated[int, typer.Option(help="Fixes every random choice.")] = 0,
    skip_bad_rows: Annotated[bool, typer.Option(help="Leave out unreadable rows, not fail.")] = False,
) -> None:
    """Train a model further on new samples of its modalities (a new speaker, a new writer), its head
    through HGM's projector with a replay of what it learnt before, and write the new version next to
    the old one."""
    from dataclasses import replace

    from anymodal.service.manifest import BundleError, read_manifest
    from anymodal.training.config import TrainConfig
    from anymodal.training.dataset import DatasetError
    from anymodal.training.growth import GrowthError
    from anymodal.training.update import update as update_bundle

    try:
        recorded = read_manifest(bundle).training.get("train", {})
        settings = TrainConfig(**recorded) if isinstance(recorded, dict) else TrainConfig()
        settings = replace(settings, seed=seed, epochs=epochs or settings.epochs)
        chosen = [m.strip() for m in modalities.split(",")] if modalities else None
        out = update_bundle(bundle, data, settings, chosen, skip_bad_rows)
    except (BundleError, DatasetError, GrowthError, OSError, TypeError) as error:
        raise _fail(f"update: {error}") from None
    typer.echo(f"wrote {out}; a server polling the repository serves it as version {out.name}")


def register(app: typer.Typer) -> None:
    """Add the training commands to a command-line app."""
    app.command("build-digits")(build_digits)
    app.command("extend")(extend)
    app.command("update")(update)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for CI logs and log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        return json.dumps(entry, ensure_ascii=False)


def json_logging() -> bool:
    """Whether logs go out as JSON lines, where progress bars would only garble them."""
    return any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)


def configure_logging(
    verbose: Annotated[bool, typer.Option(help="Log every epoch of every model.")] = False,
    log_format: Annotated[
        str, typer.Option(help="`text`, or `json`: one JSON object per line, for CI logs.")
    ] = "text",
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("use `text` or `json`", param_hint="--log-format")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX exporter narrates every pass
        logging.getLogger(chatty).setLevel(logging.WARNING)


app = typer.Typer(help="Train anymodal models with MLA.", no_args_is_help=True, add_completion=False)
app.callback()(configure_logging)
register(app)
