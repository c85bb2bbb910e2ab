"""Command line of the training package: `anymodal build-digits | train | train-digits`, also
runnable as `python -m training ...`. Heavy modules (torch) are imported inside the commands, so
registering them costs the service's command line nothing."""

from __future__ import annotations

import logging
import shlex
from dataclasses import asdict
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
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Build the bundled `digits` benchmark (spoken, handwritten and typed digits) from raw data."""
    from training.digits import DigitsOptions, SourceError, build_digits

    try:
        build_digits(
            source,
            out,
            DigitsOptions(seed=seed, test_speaker=test_speaker, val_speaker=val_speaker, limit=limit),
            not quiet,
        )
    except (SourceError, OSError) as error:
        raise _fail(f"build-digits: {error}") from None


def train(
    config: Annotated[Path, typer.Argument(help="The model config (TOML).")],
    data: Annotated[Path, typer.Option(help="Folder with train.jsonl, val.jsonl and test.jsonl.")],
    models: Annotated[Path, typer.Option(help="The model repository to export into.")] = Path("models"),
    version: Annotated[int | None, typer.Option(help="Bundle version; default: the next free one.")] = None,
    baselines: Annotated[
        bool, typer.Option(help="Also train MLA without HGM, joint and unimodal baselines.")
    ] = True,
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Skip bad rows (reported) instead of stopping.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing bundle of that version.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a model with MLA, evaluate it against the baselines, and export it to ONNX."""
    command = ["train", str(config), "--data", str(data), "--models", str(models)]
    command += ["--version", str(version)] if version is not None else []
    command += [] if baselines else ["--no-baselines"]
    command += ["--skip-bad-rows"] if skip_bad_rows else []
    _train(config, data, models, version, baselines, skip_bad_rows, force, quiet, command)


def train_digits(
    source: Annotated[
        Path, typer.Option(help="Folder with fsdd/ and optdigits/ (the raw data).")
    ] = DEFAULT_SOURCE,
    data: Annotated[Path, typer.Option(help="Where to build the dataset.")] = Path("data/digits"),
    models: Annotated[Path, typer.Option(help="The model repository to export into.")] = Path("models"),
    version: Annotated[int | None, typer.Option(help="Bundle version; default: the next free one.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the dataset and of training.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing bundle of that version.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Build `digits` from the raw data and train it end to end: one command, raw files to bundle."""
    from training.digits import DigitsOptions, SourceError, build_digits

    options = DigitsOptions(seed=seed)
    try:
        build_digits(source, data, options, not quiet)
    except (SourceError, OSError) as error:
        raise _fail(f"train-digits: {error}") from None
    command = ["train-digits", "--seed", str(seed)]
    command += ["--version", str(version)] if version is not None else []
    _train(DIGITS_CONFIG, data, models, version, True, False, force, quiet, command, seed, asdict(options))


def _train(
    config_path: Path,
    data: Path,
    models: Path,
    version: int | None,
    baselines: bool,
    skip_bad_rows: bool,
    force: bool,
    quiet: bool,
    command: list[str],
    seed: int | None = None,
    dataset: dict | None = None,
) -> None:
    try:
        from training.config import ConfigError, load_config
        from training.dataset import DatasetError
        from training.experiment import ExperimentError, run_experiment
        from training.export import ExportError
    except ImportError as error:
        raise _fail(
            f"training needs the `train` extra ({error.name} is missing): pip install -e '.[train]'"
        ) from None
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        config = load_config(config_path)
        if seed is not None:
            config.train.seed = seed
        provenance = {"command": "anymodal " + shlex.join(command), "config": config_path.name}
        if dataset is not None:
            provenance["digits"] = dataset
        with logging_redirect_tqdm():
            run_experiment(
                config, data, models, version, baselines, skip_bad_rows, not quiet, force, provenance
            )
    except (ConfigError, DatasetError, ExperimentError, ExportError) as error:
        raise _fail(str(error)) from None


def register(app: typer.Typer) -> None:
    """Add the training commands to a command-line app."""
    app.command("build-digits")(build_digits)
    app.command("train")(train)
    app.command("train-digits")(train_digits)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for chatty in ("onnxscript", "onnx_ir"):  # the ONNX exporter narrates every pass
        logging.getLogger(chatty).setLevel(logging.WARNING)


app = typer.Typer(help="Train anymodal models with MLA.", no_args_is_help=True, add_completion=False)
app.callback()(configure_logging)
register(app)
