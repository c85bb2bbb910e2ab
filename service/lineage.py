"""A model's lineage as the `/v1` API shows it: the steps of its manifest's history (`anymodal train`,
`extend`, `update`) without their bulky config and data, whether it can grow, and what a prediction
answer says of the version it came from."""

from __future__ import annotations

from typing import Any, Literal

from anymodal.service.manifest import Manifest
from pydantic import BaseModel, Field


class LineageStep(BaseModel):
    step: Literal["train", "extend", "update"]
    version: int = Field(description="The version this step produced")
    from_version: int | None = Field(None, description="The version it grew from; null for `train`")
    modalities: list[str] = Field(description="The modalities the model had after this step")
    added: list[str] = Field(description="The modalities this step added")
    trained: list[str] = Field(description="The modalities whose encoders this step trained")
    samples: dict[str, int] = Field(description="Samples per split it trained on")
    at: str = Field(description="When, ISO 8601")


class GrowthInfo(BaseModel):
    replay_size: int = Field(
        description="At most this many training samples per modality are kept (as encoder features) to"
        " replay when the model grows"
    )
    replay_kind: Literal["features", "features+inputs"] = Field(
        description="`features+inputs`: the bundle keeps those samples' encoder inputs too (user data,"
        " only when its training config asked for it), which `update` replays through the encoders"
    )


def lineage(manifest: Manifest) -> list[LineageStep]:
    return [
        LineageStep.model_validate(step.model_dump(exclude={"config", "data"})) for step in manifest.history
    ]


def growth(manifest: Manifest) -> GrowthInfo | None:
    if manifest.growth is None:
        return None
    return GrowthInfo(replay_size=manifest.growth.replay_size, replay_kind=manifest.growth.replay_kind)


def model_ref(name: str, version: int, manifest: Manifest) -> dict[str, Any]:
    """A prediction answer's `model`: the name and version served, and, for a version grown from
    another (its newest step an `extend` or `update`), which step, the version it grew from and
    the modalities that step added."""
    ref: dict[str, Any] = {"name": name, "version": version}
    newest = manifest.history[-1] if manifest.history else None
    if newest is not None and newest.step != "train":
        grown = {"step": newest.step, "grew_from": newest.from_version, "added": list(newest.added)}
        ref |= {k: v for k, v in grown.items() if v is not None}  # absent, as the answer leaves out None
    return ref
