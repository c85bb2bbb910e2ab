"""Held-out text corruptions, frozen (see evaluation.corruptions). Families may lengthen the text;
evaluation.corruptions cuts the result to the contract's byte limit."""

from __future__ import annotations

import string

import numpy as np
from anymodal.service.manifest import TextContract

GARBAGE = string.ascii_letters + string.digits + string.punctuation
EMOJI = tuple("😀😂🙂😉😍🤔👍👎🙏🔥💯🎉❤✅❌⭐🚀📷📎🤷")
OTHER_FIELDS = (
    "ibuprofen", "biopsy", "tachycardia", "dosage", "stethoscope", "invoice", "dividend",
    "mortgage", "escrow", "ledger", "amortization", "whisk", "simmer", "braise", "colander", "marinade",
)  # fmt: skip
# Cyrillic and Greek letters drawn like Latin ones, and leetspeak digits and symbols.
LOOKALIKES = dict(zip("abcehiknopsuvxyABCEHIKMOPSTX", "аЬсеһікпорѕυνхуАВСЕНІКМОРЅТХ", strict=True))
LEET = {
    "a": "4@",
    "b": "8",
    "e": "3",
    "g": "9",
    "i": "1!",
    "l": "1|",
    "o": "0",
    "s": "5$",
    "t": "7+",
    "z": "2",
}
HOMOGLYPHS = {c: LOOKALIKES.get(c, "") + LEET.get(c, "") for c in LOOKALIKES | LEET}


def _replace_share(
    text: str, replacements: list[str], positions: list[int], share: float, rng: np.random.Generator
) -> str:
    """Replace a `share` of `positions` (at least one), taken in a random order drawn once."""
    chars = list(text)
    order = rng.permutation(len(positions))
    for k in order[: max(1, round(len(positions) * share)) if positions else 0]:
        chars[positions[k]] = replacements[positions[k]]
    return "".join(chars)


def _random_chars(text: str, contract: TextContract, s: int, rng: np.random.Generator) -> str:
    """Line noise or a binary field read as text: characters replaced by arbitrary symbols."""
    garbage = [str(g) for g in rng.choice(list(GARBAGE), size=len(text))]
    return _replace_share(text, garbage, list(range(len(text))), (0.3, 0.6, 1.0)[s - 1], rng)


def _emoji(text: str, contract: TextContract, s: int, rng: np.random.Generator) -> str:
    """An emoji appended, then one after every character, then emoji instead of the text."""
    drawn = [str(e) for e in rng.choice(EMOJI, size=max(1, len(text)))]
    if s == 1:
        return f"{text} {drawn[0]}"
    if s == 2:
        return "".join(c + e for c, e in zip(text, drawn, strict=False))
    return "".join(drawn)


def _other_field(text: str, contract: TextContract, s: int, rng: np.random.Generator) -> str:
    """A field filled from another form: medical, finance or cooking words around, then instead of, it."""
    words = [str(w) for w in rng.choice(OTHER_FIELDS, size=3, replace=False)]
    if s == 1:
        return f"{text} {words[0]}"
    if s == 2:
        return f"{words[0]} {words[1]} {text} {words[2]}"
    return " ".join(words)


def _shuffle(text: str, contract: TextContract, s: int, rng: np.random.Generator) -> str:
    """Scrambled characters (mis-ordered packets, a broken input method): a third, two thirds, then
    all of the positions pass their characters round among themselves, far apart as often as not."""
    chars = list(text)
    count = min(len(chars), max(2, round(len(chars) * (1 / 3, 2 / 3, 1.0)[s - 1])))
    chosen = rng.permutation(len(chars))[:count]
    for target, source in zip(chosen, np.roll(chosen, 1), strict=True):
        chars[target] = text[source]
    return "".join(chars)


def _truncate(text: str, contract: TextContract, s: int, rng: np.random.Generator) -> str:
    """An input cut off early (a length limit, a dropped connection): 2/3, 1/3, one character."""
    stripped = text.strip() or text
    keep = max(1, round(len(stripped) * (2 / 3, 1 / 3, 0.0)[s - 1]))
    return stripped[:keep]


def _homoglyph(text: str, contract: TextContract, s: int, rng: np.random.Generator) -> str:
    """Look-alike Cyrillic/Greek letters and leetspeak digits (spam, OCR from another locale). Text
    with no letter that has a look-alike (digits only, say) is left as it is."""
    picks = rng.random(len(text))
    lookalikes = [
        HOMOGLYPHS.get(c, c)[int(p * len(HOMOGLYPHS.get(c, c)))] for c, p in zip(text, picks, strict=True)
    ]
    positions = [i for i, char in enumerate(text) if char in HOMOGLYPHS]
    return _replace_share(text, lookalikes, positions, (0.35, 0.7, 1.0)[s - 1], rng)


FAMILIES = {
    "random_chars": _random_chars,
    "emoji": _emoji,
    "other_field": _other_field,
    "shuffle": _shuffle,
    "truncate": _truncate,
    "homoglyph": _homoglyph,
}
