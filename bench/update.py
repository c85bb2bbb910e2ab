"""Updating a served model with a voice it has not heard (issue 12), measured on digits: train MLA on
digits without one FSDD speaker, `anymodal update` it with that speaker's data, and hold the result
against the version it came from and against plain fine-tuning on the new data alone.

    python bench/update.py [--seeds 0,1,2] [--epochs N] [--speaker yweweler] [--out runs/update]
                           [--json out.json] [--config training/digits.toml] [--source ../shared/data]
                           [--data data/digits-heard] [--new-data data/SPEAKER] [--skip-bad-rows]

The data, built from --source if absent (`training/digits.py`): --data without the speaker
(`--exclude-speakers`; test speaker theo, validation george) and with takes 40-49 of the training
speakers held out as `test_heard` (`--heard-takes 10`), and --new-data whose audio is all the
speaker's (`--only-speaker`: its takes 0-29 train, 30-39 validation, 40-49 test; images and text as
in digits).

For each seed, into --out:
  base/seed-S/mla       MLA (HGM on) on every modality of the config, on --data, keeping replay
                        inputs (`replay_inputs = true`): version 1
  guarded/seed-S/1, 2   version 1 copied, then `update` with --new-data: version 2
  features/seed-S/1, 2  the same, without the kept inputs (`replay_inputs=False`)
  naive/seed-S/1, 2     the same with `guarded=False`: plain fine-tuning on the new data alone
each timed from config (or bundle) and data to bundle, in wall and CPU seconds. Steps and seeds run
one after another; run it on an otherwise idle machine, as other processes' load lengthens wall
times. `--epochs` overrides the config's epochs in all (quick checks); the updates train as many
epochs as version 1, every modality the new data has (as `anymodal update` does by default).
--skip-bad-rows leaves out training rows with none of the config's modalities (a config with
fewer modalities than digits has them).
Each bundle is evaluated through its ONNX files, the reliability gate (on) and the service's fusion,
clean, on the old test split (an unheard voice) and the heard split (held-out takes of the voices
version 1 trained on) for every subset of modalities, and on the speaker's test split for audio alone
and all modalities (`evaluation/update.py` states the goals and their intervals); and the share of
the heard split's audio each bundle's gate leaves out, clean and under each corruption family of the
evaluation suite at severity 3 (`evaluation/growth.py`'s `flagged`).

Prints the accuracies and the goals, writes report.md and update.png into --out (and the summary to
--json); the exit code is 1 if a goal is not met.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path

from anymodal.evaluation.growth import Outcomes, TestSplit, flagged, outcomes, subset_name
from anymodal.evaluation.update import SYSTEMS, summarize_update
from anymodal.training.config import Config, load_config
from anymodal.training.digits import SPEAKERS, DigitsOptions, SourceError, build_digits
from anymodal.training.update import update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grow import Clock, bench_parser, derive, finish, show_progress, timings, train_mla  # noqa: E402
from bench.update_report import flagged_lines, goal_lines, table_lines, write_report  # noqa: E402

log = logging.getLogger("update")
VOICE = "audio"  # the modality a new speaker is new in
HEARD_TAKES = 10  # takes 40-49 of the training speakers: the heard split


def ensure_digits(source: Path, out: Path, options: DigitsOptions) -> None:
    """Build the digits benchmark into `out` with `options`, unless it is there already, built with
    the same options (ValueError if with others)."""
    recorded = out / "digits.json"
    if not recorded.is_file():
        build_digits(source, out, options, progress=False)
        return
    wanted = json.loads(json.dumps(asdict(options)))
    found = json.loads(recorded.read_text())["options"]
    if found != wanted:
        changed = sorted(k for k in wanted.keys() | found.keys() if found.get(k) != wanted.get(k))
        raise ValueError(
            f"{out} was built with other options ({', '.join(changed)}): remove it or name another"
        )


def update_seed(
    config: Config,
    base: Path,
    new: Path,
    out: Path,
    seed: int,
    epochs: int | None,
    provenance: dict,
    skip_bad_rows: bool = False,
) -> tuple[dict[str, Path], Clock]:
    """Version 1 trained on `base`, and version 2 updated with `new` each way of SYSTEMS: their
    bundles and training times."""
    config = derive(config, list(config.modalities), epochs)
    config = replace(config, train=replace(config.train, replay_inputs=True))
    settings = replace(config.train, seed=seed)
    clock = Clock()
    with clock.measure("train"):
        v1 = train_mla(config, base, out / "base", seed, provenance, skip_bad_rows)
    bundles = {"before": v1}
    for system in SYSTEMS[1:]:
        lineage = out / system / f"seed-{seed}"
        shutil.rmtree(lineage, ignore_errors=True)
        lineage.mkdir(parents=True)
        shutil.copytree(v1, lineage / "1")
        with clock.measure(system):
            bundles[system] = update(
                lineage / "1",
                new,
                settings,
                skip_bad_rows=skip_bad_rows,
                guarded=system != "naive",
                replay_inputs=system == "guarded",
            )
    return bundles, clock


def measure_update(
    config: Config,
    base: Path,
    new: Path,
    out: Path,
    seeds: list[int],
    epochs: int | None,
    command: str,
    speaker: str,
    modality: str = VOICE,
    skip_bad_rows: bool = False,
) -> tuple[dict, dict]:
    """Every seed trained, updated both ways and evaluated; the summary (`evaluation/update.py`) and
    the report's context. `new` holds the data of `speaker`, who is new in `modality`. Writes
    report.md and update.png into `out`."""
    provenance = {"command": command, "bench": "update"}
    runs = [update_seed(config, base, new, out, seed, epochs, provenance, skip_bad_rows) for seed in seeds]
    order = list(config.modalities)
    new_subsets = [modality, subset_name(tuple(order))]
    files = {"new": new / "test.jsonl", "old": base / "test.jsonl", "heard": base / "test_heard.jsonl"}
    tests = {split: TestSplit(path, runs[0][0]["before"]) for split, path in files.items()}
    found: dict[str, dict[str, list[Outcomes]]] = {split: {s: [] for s in SYSTEMS} for split in files}
    for bundles, _ in runs:
        for system in SYSTEMS:
            for split, test in tests.items():
                answered = outcomes(bundles[system], test, order)
                keep = new_subsets if split == "new" else list(answered)
                found[split][system].append({s: answered[s] for s in keep})
    seconds, cpu_seconds = timings([clock for _, clock in runs])
    summary = summarize_update(found, modality, seconds)
    gates = {
        system: [flagged(bundles[system], tests["heard"], modality) for bundles, _ in runs]
        for system in SYSTEMS
    }
    summary["flagged"] = {  # the heard voices' `modality` inputs the gate leaves out, per seed
        system: {condition: [seed[condition] for seed in per_seed] for condition in per_seed[0]}
        for system, per_seed in gates.items()
    }
    summary["cpu_seconds"] = cpu_seconds
    context = {
        "command": command,
        "seeds": seeds,
        "epochs": epochs,
        "test_samples": {split: len(test.labels) for split, test in tests.items()},
        "modalities": order,
        "speaker": speaker,
        "modality": modality,
    }
    write_report(out, summary, context)
    return summary, context


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--speaker", default="yweweler", choices=SPEAKERS, help="the voice left out, then added"
    )
    parser.add_argument("--source", type=Path, default=Path("../shared/data"), help="the raw data")
    parser.add_argument(
        "--data", type=Path, default=Path("data/digits-heard"), help="digits without the speaker"
    )
    parser.add_argument("--new-data", type=Path, help="the speaker's data; default data/SPEAKER")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/update"), help="bundles, report.md, update.png"
    )
    args = parser.parse_args()
    show_progress(log)
    base_options = DigitsOptions(exclude_speakers=(args.speaker,), heard_takes=HEARD_TAKES)
    if args.speaker in (base_options.test_speaker, base_options.val_speaker):
        parser.error(f"--speaker: not the test or validation speaker of digits ({args.speaker})")
    new = args.new_data or Path("data") / args.speaker
    try:
        ensure_digits(args.source, args.data, base_options)
        ensure_digits(args.source, new, DigitsOptions(only_speaker=args.speaker))
    except (ValueError, SourceError, OSError) as error:
        parser.error(str(error))
    command = shlex.join(["python", "bench/update.py", *sys.argv[1:]])
    config = load_config(args.config)
    summary, context = measure_update(
        config,
        args.data,
        new,
        args.out,
        args.seeds,
        args.epochs,
        command,
        args.speaker,
        skip_bad_rows=args.skip_bad_rows,
    )
    lines = [*table_lines(summary), "", *flagged_lines(summary), "", *goal_lines(summary)]
    return finish(lines, summary, context, args, "update.png")


if __name__ == "__main__":
    sys.exit(main())
