"""What one worker process holds while it serves: settings, repository, predictor, executors, and
its lifecycle (ready, draining, requests in flight)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from anymodal.service.predictor import Predictor
from anymodal.service.repository import ModelRepository
from anymodal.service.settings import Settings
from fastapi import Request


@dataclass
class ServiceState:
    settings: Settings
    repository: ModelRepository
    predictor: Predictor
    executors: list[ThreadPoolExecutor] = field(default_factory=list)
    started: bool = False  # every model has been tried: loaded and warmed up, or reported failed
    draining: bool = False  # SIGTERM arrived: not ready any more, finishing what is in flight
    in_flight: int = 0

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self.repository.ready


async def get_state(request: Request) -> ServiceState:
    """A coroutine, so FastAPI calls it inline rather than in a worker thread."""
    return request.app.state.service
