"""The bundled benchmark `digits`: three modalities of the same digit, made from real recordings.

- audio: the Free Spoken Digit Dataset (FSDD). One speaker is held out for the test split, so test
  audio is a voice the model never heard. Validation is carved from the training speakers by
  holding out one more of them, so that checkpoint selection and the temperatures fitted on
  validation face the same shift to an unheard voice as the test does.
- image: UCI optdigits, 8x8 counts of ink rendered to a 32x32 scan. Its training and test files were
  written by different people; validation rows are carved from the training file.
- text: the digit's name in a random language (num2words), as a person would type it.
- pen: UCI pendigits, eight (x, y) points of a pen trajectory, as a 16-number tensor. The bundled
  model does not use it; it is there for models that want a tensor modality.

Samples are paired by label, as AV-MNIST pairs MNIST with spoken digits: each image row becomes a
sample and draws a recording of the same digit from its split's pool. Every sample is degraded
the way real inputs are (background noise, occlusions and smudges, typos, and text that has
nothing to do with the digit), so that no modality is reliable alone and fusion has to matter.
Some training samples lose a modality, as real data does. Deterministic given the seed.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
from anymodal.training.degrade import add_noise, occlude, random_case, typos, unrelated_text
from num2words import num2words
from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
LANGUAGES = (
    "en", "fr", "de", "es", "it", "pt", "nl", "pl", "tr", "ru",
    "cs", "fi", "sv", "da", "id", "ro", "hu", "lt", "vi", "ja",
)  # fmt: skip
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TAKES = 50  # FSDD's recordings of each digit by each speaker
ATTRIBUTION = """\
Derived from:
- Free Spoken Digit Dataset v1.0.9, Z. Jackson et al., CC BY-SA 4.0
  (github.com/Jakobovski/free-spoken-digit-dataset)
- Optical Recognition of Handwritten Digits, E. Alpaydin and C. Kaynak (1998),
  UCI Machine Learning Repository, CC BY 4.0
"""


@dataclass(frozen=True)
class DigitsOptions:
    seed: int = 0
    test_speaker: str = "theo"
    val_speaker: str = "george"
    val_fraction: float = 0.2
    train_missing: float = 0.1  # each modality of a training sample is missing this often
    max_seconds: float = 1.5  # longer clips (a handful in FSDD) are cut to this length
    audio_snr_db: tuple[float, float] = (-6.0, 12.0)
    image_occlusion: float = 0.6  # share of images with an occluding rectangle or smudge
    image_noise: tuple[float, float] = (0.05, 0.35)
    text_typo_rate: float = 0.1
    text_unrelated: float = 0.3  # share of samples whose text says nothing about the digit
    limit: int | None = None  # at most this many samples per split (quick tests)
    exclude_speakers: tuple[str, ...] = ()  # speakers left out entirely (kept for a later update)
    only_speaker: str | None = None  # every split's audio from this speaker: takes 0-29, 30-39, 40-49
    # The last this many takes (of 50) of every training speaker stay out of training and make a
    # `test_heard` split: voices the model heard, takes it did not, to measure what an update forgets.
    heard_takes: int = 0


class SourceError(Exception):
    pass


def read_optdigits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 64 ink counts (0..16) and the digit; skips the re-publisher's header line."""
    counts, labels = [], []
    for line in path.read_text().splitlines():
        fields = line.strip().split(",")
        if len(fields) != 65 or not fields[0].isdigit():
            continue
        values = [int(v) for v in fields]
        counts.append(values[:64])
        labels.append(values[64])
    if not counts:
        raise SourceError(f"{path}: no optdigits rows")
    return np.array(counts, dtype=np.float32), np.array(labels, dtype=np.int64)


def read_pendigits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 16 coordinates (0..100) and the digit: as UCI publishes it (`8`), or as a one-hot
    string (`0000000010` is 8), as some re-publishers write it."""
    points, labels = [], []
    for line in path.read_text().splitlines():
        fields = [field.strip() for field in line.strip().split(",")]
        label = fields[16] if len(fields) == 17 else ""
        if len(label) == 10 and set(label) <= {"0", "1"} and label.count("1") == 1:
            digit = label.index("1")
        elif len(label) == 1 and label.isdigit():
            digit = int(label)
        else:
            continue
        points.append([int(v) for v in fields[:16]])
        labels.append(digit)
    if not points:
        raise SourceError(f"{path}: no pendigits rows")
    return np.array(points, dtype=np.int64), np.array(labels, dtype=np.int64)


def read_fsdd(folder: Path) -> dict[str, list[tuple[int, Path]]]:
    """Clips by speaker: (digit, path) from files named `{digit}_{speaker}_{take}.wav`."""
    clips: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in sorted(folder.glob("*.wav")):
        digit, speaker, _take = path.stem.split("_")
        clips[speaker].append((int(digit), path))
    if not clips:
        raise SourceError(f"{folder}: no FSDD recordings")
    return clips


def render_digit(counts: np.ndarray, options: DigitsOptions, rng: np.random.Generator) -> np.ndarray:
    """8x8 ink counts -> a 32x32 uint8 scan, dark ink on light paper, maybe occluded, noisy."""
    ink_8 = Image.fromarray((counts.reshape(8, 8) / 16.0).astype(np.float32), mode="F")
    ink = np.asarray(ink_8.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR), np.float64)
    if rng.random() < options.image_occlusion:
        ink = occlude(ink, rng.uniform(0.15, 0.4), rng)
    ink = ink + rng.normal(0.0, rng.uniform(*options.image_noise), ink.shape)
    paper = 1.0 - rng.uniform(0.5, 1.0) * np.clip(ink, 0.0, 1.0)
    return (paper * 255.0).round().astype(np.uint8)


def typed_name(digit: int, options: DigitsOptions, rng: np.random.Generator) -> tuple[str, str]:
    """(text, language): the digit's name as typed by someone, or unrelated text (language "")."""
    if rng.random() < options.text_unrelated:
        return unrelated_text(rng), ""
    language = str(rng.choice(LANGUAGES))
    name = num2words(digit, lang=language)
    return random_case(typos(name, options.text_typo_rate, rng), rng), language


def build_digits(source: Path, out: Path, options: DigitsOptions, progress: bool = True) -> dict:
    """Write `train.jsonl`, `val.jsonl`, `test.jsonl` with their images and recordings into `out`.
    Returns a summary (sample counts per split)."""
    named = [("test", options.test_speaker), ("validation", options.val_speaker)]
    named += [("excluded", speaker) for speaker in options.exclude_speakers]
    named += [("only", options.only_speaker)] if options.only_speaker else []
    for role, speaker in named:
        if speaker not in SPEAKERS:
            raise SourceError(f"{role} speaker {speaker!r} is not one of {SPEAKERS}")
    if options.test_speaker == options.val_speaker:
        raise SourceError("the validation and test speakers must differ")
    if not 0 <= options.heard_takes < TAKES or (options.heard_takes and options.only_speaker):
        raise SourceError(f"heard_takes: 0 to {TAKES - 1}, and not with only_speaker")
    rng = np.random.default_rng(options.seed)
    train_counts, train_labels = read_optdigits(source / "optdigits" / "optdigits.tra")
    test_counts, test_labels = read_optdigits(source / "optdigits" / "optdigits.tes")
    clips = read_fsdd(source / "fsdd" / "recordings")
    pen_train, pen_train_labels = read_pendigits(source / "pendigits" / "pendigits.tra")
    pen_test, pen_test_labels = read_pendigits(source / "pendigits" / "pendigits.tes")

    order = rng.permutation(len(train_labels))
    n_val = round(len(order) * options.val_fraction)
    images = {  # split -> (ink counts, labels, row numbers in the optdigits file)
        "train": (train_counts[order[n_val:]], train_labels[order[n_val:]], order[n_val:]),
        "val": (train_counts[order[:n_val]], train_labels[order[:n_val]], order[:n_val]),
        "test": (test_counts, test_labels, np.arange(len(test_labels))),
    }
    if options.heard_takes:
        images["test_heard"] = images["test"]
    audio_pools = _audio_pools(clips, options)
    pen_order = rng.permutation(len(pen_train_labels))
    n_val_pen = round(len(pen_order) * options.val_fraction)
    pen_val, pen_fit = pen_order[:n_val_pen], pen_order[n_val_pen:]
    pen_pools = {  # split -> (coordinates, labels, row numbers in the pendigits file)
        "train": (pen_train[pen_fit], pen_train_labels[pen_fit], pen_fit),
        "val": (pen_train[pen_val], pen_train_labels[pen_val], pen_val),
        "test": (pen_test, pen_test_labels, np.arange(len(pen_test_labels))),
    }
    pen_pools["test_heard"] = pen_pools["test"]

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, int] = {}
    for split_index, (split, (counts, labels, file_rows)) in enumerate(images.items()):
        split_rng = np.random.default_rng([options.seed, split_index])
        keep = slice(None) if options.limit is None else slice(options.limit)
        rows = _build_split(
            split,
            counts[keep],
            labels[keep],
            file_rows[keep],
            audio_pools[split],
            pen_pools[split],
            out,
            options,
            split_rng,
            progress,
        )
        summary[split] = len(rows)
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as stream:
            stream.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    provenance = {"options": asdict(options), "samples": summary, "attribution": ATTRIBUTION}
    (out / "digits.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION)
    log.info("digits: wrote %s to %s", summary, out)
    return summary


def _audio_pools(clips: dict[str, list[tuple[int, Path]]], options: DigitsOptions) -> dict[str, list]:
    """The recordings each split draws from: by speaker (one for test, one for validation, the rest
    but the excluded ones for training), or with `only_speaker`, that speaker's takes split three ways:
    the data of a voice the model has not heard, to update it with."""
    if options.only_speaker is not None:
        takes = [(_take(path), (digit, path)) for digit, path in clips[options.only_speaker]]
        return {
            "train": [clip for take, clip in takes if take < 30],
            "val": [clip for take, clip in takes if 30 <= take < 40],
            "test": [clip for take, clip in takes if take >= 40],
        }
    held_out = (options.test_speaker, options.val_speaker, *options.exclude_speakers)
    heard = [clip for speaker in SPEAKERS if speaker not in held_out for clip in clips[speaker]]
    first_held = TAKES - options.heard_takes
    return {
        "train": [(digit, path) for digit, path in heard if _take(path) < first_held],
        "val": clips[options.val_speaker],
        "test": clips[options.test_speaker],
        "test_heard": [(digit, path) for digit, path in heard if _take(path) >= first_held],
    }


def _take(path: Path) -> int:
    return int(path.stem.split("_")[2])


def _build_split(
    split: str,
    counts: np.ndarray,
    labels: np.ndarray,
    file_rows: np.ndarray,
    pool: list[tuple[int, Path]],
    pens: tuple[np.ndarray, np.ndarray, np.ndarray],
    out: Path,
    options: DigitsOptions,
    rng: np.random.Generator,
    progress: bool,
) -> list[dict]:
    by_digit: dict[int, list[Path]] = defaultdict(list)
    for digit, path in pool:
        by_digit[digit].append(path)
    queues: dict[int, list[Path]] = {d: [] for d in by_digit}
    pen_rows = {d: np.flatnonzero(pens[1] == d) for d in range(10)}
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "audio" / split).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(len(labels)), desc=f"digits {split}", disable=not progress, leave=False):
        digit = int(labels[i])
        if not queues[digit]:  # draw every clip of the digit once before any is reused
            queues[digit] = [by_digit[digit][j] for j in rng.permutation(len(by_digit[digit]))]
        clip = queues[digit].pop()
        stem = f"{i:05d}"
        image_name = f"images/{split}/{stem}.png"
        Image.fromarray(render_digit(counts[i], options, rng), mode="L").save(out / image_name)
        audio_name = f"audio/{split}/{stem}.wav"
        waveform, rate = soundfile.read(clip, dtype="float32")
        waveform = waveform[: round(options.max_seconds * rate)] * rng.uniform(0.3, 1.0)
        noisy = add_noise(waveform, rate, rng.uniform(*options.audio_snr_db), rng)
        soundfile.write(out / audio_name, noisy, rate, subtype="PCM_16")
        text, language = typed_name(digit, options, rng)
        pen_row = int(rng.choice(pen_rows[digit]))
        row = {
            "id": f"{split}-{stem}",
            "label": digit,
            "image": image_name,
            "audio": audio_name,
            "text": text,
            "pen": pens[0][pen_row].tolist(),
        }
        if split == "train" and options.train_missing > 0:
            _drop_some(row, ("image", "audio", "text"), options.train_missing, rng)
            if rng.random() < options.train_missing:
                del row["pen"]  # the three modalities above always keep one
        row["source"] = {
            "optdigits_row": int(file_rows[i]),
            "fsdd": clip.name,
            "language": language,
            "pendigits_row": int(pens[2][pen_row]),
        }
        rows.append(row)
    return rows


def _drop_some(row: dict, modalities: tuple[str, ...], rate: float, rng: np.random.Generator) -> None:
    """Remove each modality with probability `rate`, always keeping at least one."""
    dropped = [m for m in modalities if rng.random() < rate]
    if len(dropped) == len(modalities):
        dropped.pop(rng.integers(len(dropped)))
    for m in dropped:
        del row[m]
