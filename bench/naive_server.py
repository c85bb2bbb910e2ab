"""A naive FastAPI + onnxruntime server of an anymodal bundle, the peer bench/peers.py measures
anymodal against: what one writes in an afternoon. Each request runs bench/naive_pipeline.py
inline, in FastAPI's thread pool (a plain `def` route): the same work as anymodal's, with its own
functions, but no batching.

    NAIVE_BUNDLE=models/digits/1 uvicorn naive_server:app --app-dir bench [--workers 2]

POST /v1/predict takes anymodal's body ({"inputs": {"image": {"b64": ...}, "text": ...}}) and
answers its label, score and top 3. GET /health answers once the bundle is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from anymodal.service.decoding import decode_base64
from fastapi import FastAPI
from naive_pipeline import Pipeline

app = FastAPI()
pipeline = Pipeline(Path(os.environ.get("NAIVE_BUNDLE", "models/digits/1")))


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/v1/predict")
def predict(body: dict[str, dict[str, object]]) -> dict[str, object]:
    inputs = body["inputs"]
    raw = {m: decode_base64(v["b64"], m) if isinstance(v, dict) else v for m, v in inputs.items()}
    return pipeline.predict(raw)
