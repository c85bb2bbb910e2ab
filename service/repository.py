"""The model repository: `<root>/<name>/<version>/manifest.json` bundles, loaded and kept current.

Every version of every model is loaded at start: its files are checked against the manifest's
sha256, its onnxruntime sessions are created and warmed up, and only then is it served. A bundle
that fails any step is not served, is logged and counted, and does not stop the others. A reload
(asked for, or noticed by polling the folder) loads what changed next to what is serving and swaps
it in at once; a version that fails to load leaves the one already serving in place.

Polling follows the folder as Triton's poll mode does: a model or version whose folder is removed
is unloaded. A repository that cannot be read (missing, unreadable, or holding no model at all while
some are served: an unmounted volume, a failing disk, a copy half done) is a fault, not a wish to
serve nothing: the models loaded keep serving, a warning is logged once, and
`anymodal_repository_readable` reads 0 until a poll can read it again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from anymodal.service import metrics
from anymodal.service.features import input_shape
from anymodal.service.lineage import model_ref
from anymodal.service.manifest import MANIFEST_NAME, BundleError, Manifest, verify_bundle
from anymodal.service.reliability import ReliabilityModel
from anymodal.service.runtime import Session, SessionError, load_session, providers_for
from anymodal.service.settings import Settings

log = logging.getLogger(__name__)
HEAD = "head"


class UnknownModel(LookupError):
    pass


class RepositoryUnreadable(OSError):
    """The repository cannot be read: a reload asked for now changes nothing."""


@dataclass(frozen=True)
class Failure:
    reason: str
    fingerprint: str  # of the files that failed, so an unchanged broken bundle is not retried


@dataclass
class LoadedModel:
    """One served model version: its manifest, sessions, gates, and the batcher of its pipeline
    (made by the predictor on the first request)."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    fingerprint: str
    sessions: dict[str, Session]  # by modality, and HEAD
    gates: dict[str, ReliabilityModel]  # by modality, for those whose manifest has one
    batcher: Any = None

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest.modalities)

    @property
    def temperatures(self) -> np.ndarray:
        return np.array([spec.temperature for spec in self.manifest.modalities.values()])

    @property
    def provider(self) -> str:
        return self.sessions[HEAD].provider

    @cached_property
    def ref(self) -> dict[str, Any]:
        """A prediction answer's `model`, built once (`service/lineage.py`): never change it."""
        return model_ref(self.name, self.version, self.manifest)


def load_gate(path: Path) -> ReliabilityModel:
    try:
        return ReliabilityModel.load(path)
    except (OSError, ValueError, KeyError) as error:
        raise BundleError(f"{path.name}: not a reliability gate this service can read ({error})") from None


def fingerprint(bundle: Path) -> str:
    """Changes whenever the manifest or any file of the bundle is replaced or touched."""
    parts = []
    for path in sorted(bundle.rglob("*")) if bundle.is_dir() else []:
        if path.is_file():
            stat = path.stat()
            parts.append(f"{path.relative_to(bundle)}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def version_folders(model_folder: Path) -> dict[int, Path]:
    if not model_folder.is_dir():
        return {}
    return {
        int(p.name): p
        for p in model_folder.iterdir()
        if p.name.isdigit() and int(p.name) > 0 and (p / MANIFEST_NAME).is_file()
    }


class ModelRepository:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.model_repository
        self.settings = settings
        self.models: dict[str, dict[int, LoadedModel]] = {}
        self.failures: dict[tuple[str, int], Failure] = {}
        self.readable = True  # the last look at the folder could read it
        self._lock = asyncio.Lock()

    # -- lookups -----------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> LoadedModel:
        versions = self.models.get(name)
        if not versions:
            known = ", ".join(sorted(self.models)) or "none"
            raise UnknownModel(f"model {name!r} is not served here; served models: {known}")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            served = ", ".join(str(v) for v in sorted(versions))
            raise UnknownModel(f"model {name!r} has no version {version}; served versions: {served}")
        return versions[version]

    def default_name(self) -> str | None:
        wanted = self.settings.default_model
        if wanted is not None:
            return wanted
        return min(self.models) if self.models else None

    @property
    def ready(self) -> bool:
        return any(self.models.values())

    # -- loading -----------------------------------------------------------------------------
    def scan(self) -> dict[str, dict[int, Path]]:
        """The version folders of every model on disk, by name. OSError if the repository cannot be
        read: missing, not a folder, or any part of it unreadable."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is missing or not a folder")
        found = {p.name: version_folders(p) for p in self.root.iterdir()}
        return {name: folders for name, folders in sorted(found.items()) if folders}

    def load_all(self) -> None:
        """Load every version of every model in the repository (blocking; at start)."""
        try:
            on_disk = self.scan()
            self._readable(True)
        except OSError as error:
            log.error("cannot read the model repository (%s); no model is served", error)
            self._readable(False)
            on_disk = {}
        for name, folders in on_disk.items():
            versions = {}
            for version, folder in sorted(folders.items()):
                loaded = self._load(name, version, folder)
                if loaded is not None:
                    versions[version] = loaded
            if versions:
                self.models[name] = versions
        log.info("serving %s", {n: sorted(v) for n, v in self.models.items()} or "no model")

    def _load(self, name: str, version: int, folder: Path) -> LoadedModel | None:
        """Verify, load and warm up one bundle; None (logged and counted) if it cannot be served."""
        try:
            loaded = self._load_or_raise(name, version, folder)
        except (BundleError, SessionError, ValueError) as error:
            self.failures[(name, version)] = Failure(str(error), fingerprint(folder))
            metrics.LOAD_FAILURES.labels(model=name, version=str(version)).inc()
            log.error("not serving %s version %d: %s", name, version, error)
            return None
        self.failures.pop((name, version), None)
        metrics.initialize(name, loaded.modalities)
        metrics.MODEL_INFO.labels(model=name, version=str(version), provider=loaded.provider).set(1)
        metrics.MODEL_READY.labels(model=name, version=str(version)).set(1)
        log.info("loaded %s version %d on %s", name, version, loaded.provider)
        return loaded

    def _load_or_raise(self, name: str, version: int, folder: Path) -> LoadedModel:
        before = fingerprint(folder)
        manifest = verify_bundle(folder)
        if manifest.name != name:
            raise BundleError(
                f"{folder}: the manifest names the model {manifest.name!r}; the bundle must sit in"
                f" {manifest.name}/<version>/"
            )
        if manifest.version != version:  # published by copying a bundle into a new version folder
            log.info(
                "%s: served as version %d; its manifest was written as %d", folder, version, manifest.version
            )
        providers = providers_for(self.settings.provider)
        threads = self.settings.intra_op_threads
        sessions = {
            m: load_session(folder / spec.file, providers, threads) for m, spec in manifest.modalities.items()
        }
        sessions[HEAD] = load_session(folder / manifest.head.file, providers, threads)
        gates = {
            m: load_gate(folder / spec.reliability.file)
            for m, spec in manifest.modalities.items()
            if spec.reliability is not None
        }
        loaded = LoadedModel(name, version, folder, manifest, before, sessions, gates)
        self._warm_up(loaded)
        return loaded

    def _warm_up(self, loaded: LoadedModel) -> None:
        """Run every session at batch size 1 and the largest batch, and check the shapes agree."""
        width = loaded.manifest.head.feature_dim
        classes = len(loaded.manifest.labels)
        for batch in sorted({1, self.settings.max_batch_size}):
            for modality, spec in loaded.manifest.modalities.items():
                session = loaded.sessions[modality]
                out = session.run(np.zeros((batch, *input_shape(spec.input)), dtype=session.input_dtype))
                gate = loaded.gates.get(modality)
                probes = sum(gate.widths) if gate else 0
                if out.shape != (batch, width + probes):
                    raise BundleError(
                        f"{modality} encoder gives {out.shape[1:]} outputs, not ({width + probes},):"
                        f" {width} features and {probes} probes for its reliability gate"
                    )
            logits = loaded.sessions[HEAD].run(np.zeros((batch, width), dtype=np.float32))
            if logits.shape != (batch, classes):
                raise BundleError(f"the head gives {logits.shape[1:]} logits, not ({classes},) labels")

    # -- reloading ---------------------------------------------------------------------------
    async def reload(self, name: str) -> dict:
        """Bring `name` in line with the folder: load new or changed versions next to the serving
        ones, drop removed ones, swap at once. Returns what happened."""
        async with self._lock:
            try:
                if not self.root.is_dir():
                    raise FileNotFoundError(f"{self.root} is missing or not a folder")
                folders = await asyncio.to_thread(version_folders, self.root / name)
            except OSError as error:
                raise RepositoryUnreadable(
                    f"cannot read the model repository ({error}); the loaded versions keep serving"
                ) from None
            if not folders and name not in self.models:
                raise UnknownModel(f"model {name!r} is neither served nor in the repository")
            current = dict(self.models.get(name, {}))
            report: dict = {"model": name, "loaded": [], "unchanged": [], "removed": [], "failed": {}}
            updated: dict[int, LoadedModel] = {}
            for version, folder in sorted(folders.items()):
                serving = current.get(version)
                if serving is not None and serving.fingerprint == fingerprint(folder):
                    updated[version] = serving
                    report["unchanged"].append(version)
                    continue
                loaded = await asyncio.to_thread(self._load, name, version, folder)
                if loaded is not None:
                    updated[version] = loaded
                    report["loaded"].append(version)
                else:
                    report["failed"][version] = self.failures[(name, version)].reason
                    if serving is not None:  # the old files changed under it; keep it serving
                        updated[version] = serving
            for version in sorted(set(current) - set(folders)):
                report["removed"].append(version)
                metrics.MODEL_READY.labels(model=name, version=str(version)).set(0)
                metrics.MODEL_INFO.labels(
                    model=name, version=str(version), provider=current[version].provider
                ).set(0)
            if updated:
                self.models[name] = updated
            else:
                self.models.pop(name, None)
            report["serving"] = sorted(updated)
            if report["loaded"] or report["removed"] or report["failed"]:
                log.info("reloaded %s: %s", name, report)
            return report

    def changed_models(self, on_disk: dict[str, dict[int, Path]]) -> list[str]:
        """Models whose folders (`scan`) differ from what is loaded: new, changed or removed
        versions. A broken version is tried again only once its files change."""
        changed = []
        for name in sorted(set(on_disk) | set(self.models)):
            folders = on_disk.get(name, {})
            served = self.models.get(name, {})
            for version, folder in folders.items():
                now = fingerprint(folder)
                failure = self.failures.get((name, version))
                if (version in served and served[version].fingerprint == now) or (
                    failure is not None and failure.fingerprint == now
                ):
                    continue
                changed.append(name)
                break
            else:
                if set(served) - set(folders):
                    changed.append(name)
        return changed

    async def watch(self, interval: float) -> None:
        """Poll the repository every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll()
            except Exception:  # a broken poll must not end the watcher
                log.exception("repository poll failed")

    async def poll(self) -> None:
        """Reload the models that changed, unless the repository cannot be read (or holds no model
        while some are served): then keep serving what is loaded."""
        try:
            on_disk = await asyncio.to_thread(self.scan)
            if not on_disk and self.models:
                raise FileNotFoundError(f"{self.root} holds no model")
        except OSError as error:
            metrics.REPOSITORY_ERRORS.inc()
            if self.readable:
                log.warning(
                    "cannot read the model repository (%s); the models loaded keep serving: %s",
                    error,
                    {n: sorted(v) for n, v in self.models.items()},
                )
            self._readable(False)
            return
        if not self.readable:
            log.info("the model repository %s can be read again", self.root)
        self._readable(True)
        for name in await asyncio.to_thread(self.changed_models, on_disk):
            await self.reload(name)

    def _readable(self, readable: bool) -> None:
        self.readable = readable
        metrics.REPOSITORY_READABLE.set(int(readable))
