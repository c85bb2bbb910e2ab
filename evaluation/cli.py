"""`anymodal train`, `train-digits` and `evaluate`: train at one or several seeds, evaluate every
bundle through the service's code path, write the report and publish the chosen seed. Heavy
modules (torch) are imported inside the commands, so registering them costs the service's command
line nothing."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from anymodal.training.cli import DEFAULT_SOURCE, DIGITS_CONFIG, json_logging
from anymodal.training.config import Config

SeedsOption = Annotated[
    str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2; the report gives intervals over them.")
]
SeedOption = Annotated[int | None, typer.Option(help="One seed (the same as --seeds N).")]
RunsOption = Annotated[
    Path, typer.Option(help="Where every seed's bundles are written, before one is published.")
]
ModelsOption = Annotated[Path, typer.Option(help="The model repository to publish into.")]
VersionOption = Annotated[int | None, typer.Option(help="Bundle version; default: the next free one.")]
ForceOption = Annotated[bool, typer.Option(help="Overwrite an existing bundle of that version.")]
QuietOption = Annotated[bool, typer.Option(help="No progress bars.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def parse_seeds(seeds: str | None, seed: int | None, default: int) -> list[int]:
    if seeds is not None and seed is not None:
        raise _fail("give --seed or --seeds, not both")
    if seeds is None:
        return [default if seed is None else seed]
    try:
        parsed = [int(part) for part in seeds.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"--seeds: {seeds!r} is not a comma-separated list of integers, e.g. 0,1,2") from None
    if not parsed or len(set(parsed)) != len(parsed):
        raise _fail(f"--seeds: {seeds!r} must name at least one seed, each once")
    return parsed


def train(
    config: Annotated[Path, typer.Argument(help="The model config (TOML).")],
    data: Annotated[Path, typer.Option(help="Folder with train.jsonl, val.jsonl and test.jsonl.")],
    models: ModelsOption = Path("models"),
    runs: RunsOption = Path("runs"),
    seeds: SeedsOption = None,
    seed: SeedOption = None,
    version: VersionOption = None,
    baselines: Annotated[
        bool, typer.Option(help="Also train MLA without HGM and joint training, for the report.")
    ] = True,
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Skip bad rows (reported) instead of stopping.")
    ] = False,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train a model with MLA at each seed, evaluate it against the baselines under the frozen
    corruption suite, and publish the seed chosen on validation as an ONNX bundle."""
    from anymodal.training.config import ConfigError, load_config

    try:
        loaded = load_config(config)
    except ConfigError as error:
        raise _fail(str(error)) from None
    chosen = parse_seeds(seeds, seed, loaded.train.seed)
    command = ["train", str(config), "--data", str(data), "--models", str(models), "--runs", str(runs)]
    command += ["--seeds", ",".join(map(str, chosen))]
    command += [] if baselines else ["--no-baselines"]
    command += ["--skip-bad-rows"] if skip_bad_rows else []
    provenance = {"command": "anymodal " + shlex.join(command), "config": config.name}
    _run(
        loaded,
        data,
        models,
        runs / loaded.name,
        chosen,
        baselines,
        version,
        force,
        skip_bad_rows,
        quiet,
        provenance,
    )


def train_digits(
    source: Annotated[
        Path, typer.Option(help="Folder with fsdd/ and optdigits/ (the raw data).")
    ] = DEFAULT_SOURCE,
    data: Annotated[Path, typer.Option(help="Where to build the dataset.")] = Path("data/digits"),
    models: ModelsOption = Path("models"),
    runs: RunsOption = Path("runs"),
    seeds: SeedsOption = None,
    seed: SeedOption = None,
    version: VersionOption = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> None:
    """Build `digits` from the raw data (always with data seed 0) and train it end to end."""
    from anymodal.training.config import load_config
    from anymodal.training.digits import DigitsOptions, SourceError, build_digits

    options = DigitsOptions()
    try:
        build_digits(source, data, options, not quiet)
    except (SourceError, OSError) as error:
        raise _fail(f"train-digits: {error}") from None
    config = load_config(DIGITS_CONFIG)
    chosen = parse_seeds(seeds, seed, config.train.seed)
    command = ["train-digits", "--seeds", ",".join(map(str, chosen))]
    command += ["--version", str(version)] if version is not None else []
    provenance = {
        "command": "anymodal " + shlex.join(command),
        "config": DIGITS_CONFIG.name,
        "digits": asdict(options),
    }
    _run(config, data, models, runs / config.name, chosen, True, version, force, False, quiet, provenance)


def evaluate(
    runs: Annotated[Path, typer.Argument(help="A folder of seed-<N>/ folders written by `anymodal train`.")],
    data: Annotated[Path, typer.Option(help="Folder with the test.jsonl split.")],
    models: ModelsOption = Path("models"),
    version: VersionOption = None,
    force: ForceOption = False,
) -> None:
    """Evaluate already trained seeds again (report and publish), without training."""
    from anymodal.evaluation.workflow import WorkflowError, evaluate_runs, publish
    from anymodal.service.manifest import BundleError, read_manifest

    folders = sorted(runs.glob("seed-*"), key=lambda p: int(p.name.split("-")[1]))
    if not folders:
        raise _fail(f"{runs}: no seed-<N>/ folders; train first with `anymodal train`")
    try:
        summary, context = evaluate_runs(folders, data / "test.jsonl")
        nll = {
            int(f.name.split("-")[1]): json.loads((f / "seed.json").read_text())["val_nll"]["mla"]
            for f in folders
        }
        best = min(nll, key=nll.__getitem__)
        chosen = runs / f"seed-{best}" / "mla"
        command = read_manifest(chosen).data.get("command")  # how the seeds were trained
        context |= {"seeds": sorted(nll), "chosen_seed": best, "command": command}
        publish(summary, context, chosen, models, version, force)
    except (WorkflowError, BundleError, OSError) as error:
        raise _fail(f"evaluate: {error}") from None


def compare(
    before: Annotated[Path, typer.Argument(help="The version before: <repository>/<name>/<version>.")],
    after: Annotated[Path, typer.Argument(help="The version after; it has every modality of the first.")],
    test: Annotated[list[Path], typer.Option(help="A test split (JSONL); repeat it for several.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the numbers here.")] = None,
) -> None:
    """What a step of growth gained and forgot: two versions' accuracy on the same test splits, per
    subset of modalities, answered as the service answers (gate and fusion), with the difference's
    95% interval over the test samples."""
    from anymodal.evaluation.compare import CompareError, compare_lines, compare_versions
    from anymodal.service.manifest import BundleError
    from anymodal.training.dataset import DatasetError

    try:
        results = {str(path): compare_versions(before, after, path) for path in test}
    except (CompareError, BundleError, DatasetError, OSError) as error:
        raise _fail(f"compare: {error}") from None
    typer.echo(f"{before} -> {after}, accuracy (%), clean")
    typer.echo("\n".join(compare_lines(results)))
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2) + "\n")


def _run(
    config: Config,
    data: Path,
    models: Path,
    runs: Path,
    seeds: list[int],
    baselines: bool,
    version: int | None,
    force: bool,
    skip_bad_rows: bool,
    quiet: bool,
    provenance: dict,
) -> None:
    """Train, evaluate and publish, turning every error a user can cause into a message."""
    try:
        from anymodal.training.dataset import DatasetError
        from anymodal.training.experiment import SYSTEMS, ExperimentError
        from anymodal.training.export import ExportError
    except ImportError as error:
        raise _fail(
            f"training needs the `train` extra ({error.name} is missing): pip install -e '.[train]'"
        ) from None
    from anymodal.evaluation.workflow import WorkflowError, run
    from tqdm.contrib.logging import logging_redirect_tqdm

    systems = list(SYSTEMS) if baselines else ["mla"]
    try:
        with logging_redirect_tqdm():
            bundle = run(
                config,
                data,
                models,
                runs,
                seeds,
                systems,
                version,
                force,
                skip_bad_rows,
                not quiet and not json_logging(),
                provenance,
            )
    except (DatasetError, ExperimentError, ExportError, WorkflowError) as error:
        raise _fail(str(error)) from None
    if not quiet:
        typer.echo(summary_table(json.loads((bundle / "metrics.json").read_text())))
    typer.echo(f"published {bundle}; report: {bundle / 'report.md'}")
    typer.echo(f"serve it with: anymodal serve --repository {bundle.parent.parent}")


def summary_table(metrics: dict) -> str:
    """Clean test accuracy (%) of every subset for each system: mean over seeds, and their range."""
    from anymodal.evaluation.summary import VARIANTS

    matrix = metrics["matrix"]
    variants = [v for v in VARIANTS if v in matrix]
    width = max(len(subset) for subset in matrix["mla"]) + 2
    lines = ["test accuracy (%), clean: mean (lowest-highest seed)"]
    lines.append(("".ljust(width) + "".join(VARIANTS[v].ljust(26) for v in variants)).rstrip())
    for subset in matrix["mla"]:
        cells = [matrix[v][subset]["clean"] for v in variants]
        row = "".join(
            f"{100 * c['mean']:.1f} ({100 * c['min']:.1f}-{100 * c['max']:.1f})".ljust(26) for c in cells
        )
        lines.append((subset.ljust(width) + row).rstrip())
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("train-digits")(train_digits)
    app.command("evaluate")(evaluate)
    app.command("compare")(compare)
