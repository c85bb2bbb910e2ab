"""An MLServer custom runtime serving an anymodal bundle: the peer bench/peers.py measures anymodal
against. Each request runs bench/naive_pipeline.py inline in `predict`, as a custom runtime does:
the same work as anymodal's, with its own functions, one instance at a time.

The model's `parameters.uri` is the bundle's folder. A request is the Open Inference Protocol's:
BYTES inputs named by modality, of shape [1], files in base64 and text as it is; the answer's
outputs are `label` (BYTES) and `score` (FP32). Runs in bench/.venv-mlserver (bench/peers.py
makes it), with bench/ on PYTHONPATH.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anymodal.service.decoding import decode_base64
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from naive_pipeline import Pipeline


class AnymodalRuntime(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError("the model's parameters.uri must name the bundle's folder")
        self.pipeline = Pipeline(Path(uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        modalities = self.pipeline.manifest.modalities
        raw: dict[str, object] = {}
        for request_input in payload.inputs:
            value = StringCodec.decode_input(request_input)[0]
            text = modalities[request_input.name].kind == "text"
            raw[request_input.name] = value if text else decode_base64(value, request_input.name)
        answer = self.pipeline.predict(raw)
        outputs = [
            StringCodec.encode_output("label", [str(answer["label"])]),
            NumpyCodec.encode_output("score", np.array([answer["score"]], dtype=np.float32)),
        ]
        return InferenceResponse(model_name=self.name, outputs=outputs)
