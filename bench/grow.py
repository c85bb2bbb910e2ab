"""Growing a served model (issue 12), measured on digits: train image + text, extend with audio, and
hold the result against the version it grew from and against a model trained on all three from
scratch.

    python bench/grow.py [--seeds 0,1,2] [--epochs N] [--out runs/grow] [--json out.json]
                         [--config training/digits.toml] [--data data/digits] [--add audio]
                         [--skip-bad-rows]

For each seed, into --out:
  <old>/seed-S/mla        MLA (HGM on) on every modality of the config but --add: version 1
  grown/seed-S/1, 2       version 1 copied, then `anymodal extend` with --add: version 2
  scratch/seed-S/mla      MLA on every modality from scratch
each timed from config and data to bundle (`train_seeds` with systems ["mla"], or `extend`), in
wall and CPU seconds. Steps and seeds run one after another; run it on an otherwise idle machine,
as other processes' load lengthens wall times. Training rows with only added modalities are left
out of version 1; with --skip-bad-rows, rows with none of the config's modalities are left out of
the other two as well (pen-speech has them). `--epochs` overrides the config's epochs in all three
(quick checks). Then each bundle is evaluated through its ONNX files, the reliability gate (on)
and the service's fusion, on the clean test split, for every subset of its modalities
(`evaluation/growth.py`, which states the goals and their intervals).

Prints the accuracies and the goals, writes report.md and grow.png into --out (and the summary to
--json); the exit code is 1 if a goal is not met.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from anymodal.evaluation.growth import Outcomes, TestSplit, outcomes, summarize_growth
from anymodal.training.config import Config, load_config
from anymodal.training.experiment import train_seeds
from anymodal.training.extend import extend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grow_report import goal_lines, table_lines, write_report  # noqa: E402

log = logging.getLogger("grow")


def derive(config: Config, modalities: list[str], epochs: int | None) -> Config:
    """`config` with only `modalities` (in its order), and `epochs` if given."""
    train = config.train if epochs is None else replace(config.train, epochs=epochs)
    return replace(config, modalities={m: config.modalities[m] for m in modalities}, train=train)


@dataclass
class Clock:
    """Wall and CPU seconds (every thread of this process) of each step timed."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[step], self.cpu[step] = time.perf_counter() - wall, time.process_time() - cpu
        log.info("%s: %.0f s (CPU %.0f s)", step, self.wall[step], self.cpu[step])


def train_mla(
    config: Config, data: Path, runs: Path, seed: int, provenance: dict, skip_bad_rows: bool = False
) -> Path:
    """Train MLA at `seed` into `runs/seed-<seed>/mla`, the way `anymodal train` does."""
    _, done = train_seeds(config, data, runs, [seed], ["mla"], provenance, skip_bad_rows, progress=False)
    return done[0].bundles["mla"]


def grow_seed(
    config: Config,
    added: list[str],
    data: Path,
    out: Path,
    seed: int,
    epochs: int | None,
    provenance: dict,
    skip_bad_rows: bool = False,
) -> tuple[dict[str, Path], Clock]:
    """Version 1 on the old modalities, version 2 extended with `added`, and the model trained on
    every modality from scratch: their bundles and training times."""
    old = [m for m in config.modalities if m not in added]
    old_name = "+".join(old)
    clock = Clock()
    # A training row with only added modalities has none of version 1's: a bad row, left out of it.
    with clock.measure(old_name):
        v1 = train_mla(derive(config, old, epochs), data, out / old_name, seed, provenance, True)
    lineage = out / "grown" / f"seed-{seed}"
    shutil.rmtree(lineage, ignore_errors=True)
    lineage.mkdir(parents=True)
    shutil.copytree(v1, lineage / "1")
    with clock.measure("extend"):
        v2 = extend(lineage / "1", derive(config, added, epochs), data, seed, skip_bad_rows)
    with clock.measure("scratch"):
        scratch = train_mla(
            derive(config, list(config.modalities), epochs),
            data,
            out / "scratch",
            seed,
            provenance,
            skip_bad_rows,
        )
    return {"before": lineage / "1", "after": v2, "scratch": scratch}, clock


def parse_seeds(text: str) -> list[int]:
    seeds = [int(part) for part in text.split(",") if part.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: name at least one seed, each once (e.g. 0,1,2)")
    return seeds


def grow(
    config: Config,
    added: list[str],
    data: Path,
    out: Path,
    seeds: list[int],
    epochs: int | None,
    command: str,
    skip_bad_rows: bool = False,
) -> tuple[dict, dict]:
    """Every seed grown and evaluated; the summary (`evaluation/growth.py`) and the report's context.
    Writes report.md and grow.png into `out`."""
    provenance = {"command": command, "bench": "grow"}
    runs = [grow_seed(config, added, data, out, seed, epochs, provenance, skip_bad_rows) for seed in seeds]
    test = TestSplit(data / "test.jsonl", runs[0][0]["scratch"])
    evaluated: dict[str, list[Outcomes]] = {"before": [], "after": [], "scratch": []}
    for bundles, _ in runs:
        for system, bundle in bundles.items():
            evaluated[system].append(outcomes(bundle, test, list(config.modalities)))
    seconds, cpu_seconds = timings([clock for _, clock in runs])
    summary = summarize_growth(evaluated["before"], evaluated["after"], evaluated["scratch"], seconds)
    summary["cpu_seconds"] = cpu_seconds
    context = {
        "command": command,
        "seeds": seeds,
        "epochs": epochs,
        "test_samples": len(test.labels),
        "added": added,
        "modalities": list(config.modalities),
    }
    write_report(out, summary, context)
    return summary, context


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/digits"))
    parser.add_argument("--add", default="audio", help="the modalities to add, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("runs/grow"), help="bundles, report.md, grow.png")
    args = parser.parse_args()
    show_progress(log)
    config = load_config(args.config)
    added = [m for m in args.add.split(",") if m]
    if not added or set(added) - set(config.modalities) or set(added) == set(config.modalities):
        parser.error(f"--add: name some but not all of the config's modalities {list(config.modalities)}")
    command = shlex.join(["python", "bench/grow.py", *sys.argv[1:]])
    summary, context = grow(
        config, added, args.data, args.out, args.seeds, args.epochs, command, args.skip_bad_rows
    )
    return finish([*table_lines(summary), "", *goal_lines(summary)], summary, context, args, "grow.png")


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments the growth benchmarks share: --seeds, --epochs, --config, --json, --skip-bad-rows."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--epochs", type=int, help="override the config's epochs (quick checks)")
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "digits.toml")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument(
        "--skip-bad-rows", action="store_true", help="leave out rows with none of the config's modalities"
    )
    return parser


def show_progress(bench: logging.Logger) -> None:
    """Log anymodal's and `bench`'s progress at INFO, not the ONNX exporter's chatter."""
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("anymodal", bench.name):
        logging.getLogger(name).setLevel(logging.INFO)


def timings(clocks: list[Clock]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each step's wall and CPU seconds, a value per seed."""
    wall = {step: [clock.wall[step] for clock in clocks] for step in clocks[0].wall}
    return wall, {step: [clock.cpu[step] for clock in clocks] for step in clocks[0].cpu}


def finish(lines: list[str], summary: dict, context: dict, args: argparse.Namespace, plot: str) -> int:
    """Print `lines`, say what was written, write the summary to `--json`; the exit code: 1 if a goal
    is not met."""
    print("\n".join(lines))
    print(f"\nwrote {args.out / 'report.md'} and {args.out / plot}")
    if args.json:
        args.json.write_text(json.dumps(summary | {"context": context}, indent=2) + "\n")
    return 0 if all(goal["met"] for goal in summary["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
