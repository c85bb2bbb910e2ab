"""The requests of the soak (bench/soak.py), each body built once: every non-empty subset of a
model's modalities through `/v1` JSON, `/v1` multipart and the Open Inference Protocol's JSON, good
ones and bad ones, each with the status the service must answer and the state it must count each
input in (`anymodal_inputs_total`).

Bad requests have one bad input (or option), of three sorts:
- unusable inputs (a truncated PNG or WAV, a WAV sent as the image, a PNG as the audio, empty or
  over-long text, a value of the wrong shape or not base64): with `on_invalid=reject` the request
  is refused (422 on `/v1`, 400 on v2) and the input counted `invalid`; with `on_invalid=drop` it is
  answered 200 without the input, counted `dropped`, unless it was the only input (refused,
  `invalid`);
- values the body's schema refuses (a number as the text, a FP32 tensor for an image): refused
  before any input is read, so none is counted;
- a bad option (`top_k` not a number): refused likewise.
The good inputs of a refused request are counted `present`: they were decoded, the gate never ran.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PROTOCOLS = ("json", "multipart", "v2")
SAMPLES = {"7": "sieben", "3": "three"}  # the digits of the fixtures, and a word for each
SENT = "sent"  # an expected state: a good input, counted present or (failing the gate) unreliable
BOUNDARY = "anymodal-soak-5c0e2b9d41f7"

Part = tuple[str, bytes, str | None]  # a multipart field: name, content, file name (None: not a file)


@dataclass(frozen=True)
class Bad:
    """A bad input of one protocol (`piece`: its JSON value, multipart part or v2 tensor), or a bad
    option (`modality` None, `piece` the options); `refused`: refused before any input is read."""

    what: str
    modality: str | None
    piece: Any
    refused: bool = False


@dataclass(frozen=True)
class Case:
    protocol: str
    name: str
    route: str  # as /metrics labels it
    path: str
    body: bytes
    headers: dict[str, str]
    status: int
    states: dict[str, str] | None  # modality -> SENT, missing, dropped or invalid; None: none counted

    def counted(self, code: int, content: bytes) -> tuple[dict[str, str] | None, str | None]:
        """The state the service counted each input in, as far as its answer shows, and what is
        wrong with the answer (None: nothing)."""
        if code == 200:
            try:
                states = answered_states(self.protocol, content)
            except (ValueError, KeyError, StopIteration):
                return None, "200 with an answer that has no modality states"
            if code != self.status:
                return states, f"200, expected {self.status}"
            if self.states is not None and not matches(self.states, states):
                return states, f"states {states}, expected {self.states}"
            return states, None
        if code != self.status:
            return None, f"{code}, expected {self.status}"
        if self.states is None:
            return None, None
        return {m: "present" if s == SENT else s for m, s in self.states.items()}, None


def matches(expected: dict[str, str], answered: dict[str, str]) -> bool:
    return expected.keys() == answered.keys() and all(
        answered[m] in ("present", "unreliable") if state == SENT else answered[m] == state
        for m, state in expected.items()
    )


def answered_states(protocol: str, content: bytes) -> dict[str, str]:
    answer = json.loads(content)
    if protocol == "v2":
        names = answer["parameters"]["modalities"].split(",")
        states = next(o["data"] for o in answer["outputs"] if o["name"] == "modality_states")
        return dict(zip(names, states, strict=True))
    return {m: report["state"] for m, report in answer["modalities"].items()}


def build(model: str, modalities: dict[str, dict[str, Any]]) -> tuple[list[Case], list[Case]]:
    """The good cases and the bad ones of a model, from its `/v1/models/{model}` modalities."""
    kinds = {name: info["kind"] for name, info in modalities.items()}
    unknown = set(kinds.values()) - {"image", "audio", "text"}
    if unknown:
        raise ValueError(f"the soak has inputs for images, recordings and text, not {', '.join(unknown)}")
    good: list[Case] = []
    bad: list[Case] = []
    for protocol in PROTOCOLS:
        bads = bad_inputs(protocol, modalities)
        for size in range(1, len(kinds) + 1):
            for subset in itertools.combinations(kinds, size):
                for digit in SAMPLES:
                    inputs = {m: encode(protocol, m, sample(kinds[m], digit)) for m in subset}
                    good.append(case(protocol, model, kinds, f"{'+'.join(subset)}, a {digit}", inputs))
                sevens = {m: encode(protocol, m, sample(kinds[m], "7")) for m in subset}
                for fault in (f for f in bads if f.modality in (None, *subset)):
                    for on_invalid in (None,) if fault.refused else ("reject", "drop"):
                        name = f"{'+'.join(subset)}, {fault.what}"
                        name += f", on_invalid={on_invalid}" if on_invalid else ""
                        bad.append(case(protocol, model, kinds, name, sevens, fault, on_invalid))
    return good, bad


def sample(kind: str, digit: str) -> bytes | str:
    if kind == "text":
        return SAMPLES[digit]
    return (FIXTURES / f"digit_{digit}.{'png' if kind == 'image' else 'wav'}").read_bytes()


def encode(protocol: str, name: str, value: bytes | str) -> Any:
    """A file's bytes or a text as an input of `protocol`."""
    if protocol == "json":
        return value if isinstance(value, str) else {"b64": base64.b64encode(value).decode()}
    if protocol == "multipart":
        return (name, value.encode(), None) if isinstance(value, str) else (name, value, f"{name}.bin")
    return tensor(name, [value if isinstance(value, str) else base64.b64encode(value).decode()])


def tensor(name: str, data: list[Any], datatype: str = "BYTES") -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": datatype, "data": data}


def bad_inputs(protocol: str, modalities: dict[str, dict[str, Any]]) -> list[Bad]:
    png, wav = sample("image", "7"), sample("audio", "7")
    assert isinstance(png, bytes) and isinstance(wav, bytes)
    unusable: dict[str, list[tuple[str, bytes | str]]] = {
        "image": [("truncated PNG", png[: len(png) // 2]), ("a WAV as the image", wav)],
        "audio": [("truncated WAV", wav[: len(wav) // 2]), ("a PNG as the audio", png)],
        "text": [("empty text", "")],
    }
    bads = [Bad("top_k not a number", None, {"top_k": "many"}, refused=True)]
    for name, info in modalities.items():
        kind = info["kind"]
        values = unusable[kind]
        if kind == "text":
            values = [*values, ("text over the length limit", "7" * (info["input"]["max_length"] + 1))]
        bads += [Bad(f"{name}: {what}", name, encode(protocol, name, value)) for what, value in values]
        bads += wrong_types(protocol, name, kind)
    return bads


def wrong_types(protocol: str, name: str, kind: str) -> list[Bad]:
    """Inputs of the wrong type or encoding; `refused` where the body's schema catches them."""
    text = kind == "text"
    if protocol == "json":
        if text:
            return [Bad(f"{name}: a number", name, 7, refused=True)]
        return [
            Bad(f"{name}: a list of numbers, not {{b64}}", name, [0.5, 0.25]),
            Bad(f"{name}: not base64", name, {"b64": "not base64!"}),
        ]
    if protocol == "multipart":
        if text:
            return [Bad(f"{name}: a file that is not UTF-8", name, (name, b"\xff\xfe\xfd", "text.txt"))]
        return [Bad(f"{name}: a field, not a file", name, (name, b"digit.png", None))]
    if text:
        return [Bad(f"{name}: a number in a BYTES tensor", name, tensor(name, [7]), refused=True)]
    return [
        Bad(f"{name}: not base64", name, tensor(name, ["not base64!"])),
        Bad(f"{name}: FP32, not BYTES", name, tensor(name, [1.5], "FP32"), refused=True),
    ]


def case(
    protocol: str,
    model: str,
    kinds: dict[str, str],
    name: str,
    inputs: dict[str, Any],
    fault: Bad | None = None,
    on_invalid: str | None = None,
) -> Case:
    refusal = 400 if protocol == "v2" else 422
    states: dict[str, str] | None = {m: SENT if m in inputs else "missing" for m in kinds}
    options: dict[str, Any] = {"on_invalid": on_invalid} if on_invalid else {}
    if fault is None:
        status = 200
    elif fault.modality is None:
        status, states, options = refusal, None, fault.piece
    else:
        inputs = inputs | {fault.modality: fault.piece}
        if fault.refused:
            status, states = refusal, None
        elif on_invalid == "drop" and len(inputs) > 1:
            status, states = 200, states | {fault.modality: "dropped"}
        else:
            status, states = refusal, states | {fault.modality: "invalid"}
    body, content_type = encode_body(protocol, inputs, options)
    route, path = {
        "json": ("/v1/predict", "/v1/predict"),
        "multipart": ("/v1/models/{model}/predict", f"/v1/models/{model}/predict"),
        "v2": ("/v2/models/{model}/infer", f"/v2/models/{model}/infer"),
    }[protocol]
    return Case(protocol, name, route, path, body, {"content-type": content_type}, status, states)


def encode_body(protocol: str, inputs: dict[str, Any], options: dict[str, Any]) -> tuple[bytes, str]:
    if protocol == "json":
        return json.dumps({"inputs": inputs, "options": options}).encode(), "application/json"
    if protocol == "multipart":
        parts = [*inputs.values(), *((key, str(value).encode(), None) for key, value in options.items())]
        return multipart(parts), f"multipart/form-data; boundary={BOUNDARY}"
    outputs = [{"name": "label"}, {"name": "modality_states"}]
    body = {"inputs": list(inputs.values()), "parameters": options, "outputs": outputs}
    return json.dumps(body).encode(), "application/json"


def multipart(parts: list[Part]) -> bytes:
    chunks = []
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        typed = "\r\nContent-Type: application/octet-stream" if filename else ""
        chunks.append(f"--{BOUNDARY}\r\nContent-Disposition: {disposition}{typed}\r\n\r\n".encode())
        chunks.append(content + b"\r\n")
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()
