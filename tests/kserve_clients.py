"""KServe's SDK clients against a live server, run by tests/test_grpc.py in a process of their own
(KServe's copy of the protocol's messages cannot share one with tritonclient's):

    python -m tests.kserve_clients http://127.0.0.1:<port> 127.0.0.1:<grpc port>

prints, as JSON, readiness and the answers to the image and text of digit 7 through
`InferenceGRPCClient` (raw inputs, and typed contents) and `InferenceRESTClient` (v2), and the
status of an unknown model over gRPC."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    InferResponse,
    RESTConfig,
)

from tests.live import fixture

OUTPUTS = ("label", "score", "modality_states", "reliable")


def request(binary: bool, model: str = "digits") -> InferRequest:
    inputs = []
    for name, value in (("image", fixture("digit_7.png")), ("text", b"sieben")):
        tensor = InferInput(name, [1], "BYTES")
        if binary:
            tensor.set_data_from_numpy(np.array([value], dtype=object))  # raw_input_contents
        else:
            tensor.data = [value]  # typed contents: bytes_contents
        inputs.append(tensor)
    return InferRequest(model_name=model, infer_inputs=inputs, request_id="kserve")


def plain(value: object) -> object:
    """An output's `tolist()` with its BYTES elements as text."""
    if isinstance(value, list):
        return [plain(element) for element in value]
    return value.decode() if isinstance(value, bytes) else value


def summary(response: InferResponse) -> dict[str, object]:
    outputs = {output.name: output for output in response.outputs}
    return {name: plain(outputs[name].as_numpy().tolist()) for name in OUTPUTS}


async def main(url: str, grpc_url: str) -> dict:
    answers: dict = {}
    async with InferenceGRPCClient(grpc_url, retries=0) as client:
        answers["grpc_ready"] = await client.is_server_ready() and await client.is_model_ready("digits")
        answers["grpc_raw"] = summary(await client.infer(request(binary=True)))
        answers["grpc_typed"] = summary(await client.infer(request(binary=False)))
        try:
            await client.infer(request(binary=True, model="nope"))
        except grpc.RpcError as error:
            answers["grpc_error"] = [str(error.code()), error.details()]
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        answers["rest_ready"] = await rest.is_server_ready(url) and await rest.is_model_ready(url, "digits")
        answers["rest"] = summary(await rest.infer(url, request(binary=True), model_name="digits"))
    finally:
        await rest.close()
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:3]))))
