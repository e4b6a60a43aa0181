"""A small KServe v2 (Open Inference Protocol) REST server for tests.

It really runs the ONNX model it is given with onnxruntime, so a remote provider's scores can be
compared with the local cpu provider's. Tests flip its attributes to make it answer errors.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import onnxruntime


class KServeServer:
    """Serves one model under ``model_name`` on a free 127.0.0.1 port until ``stop()``."""

    def __init__(self, *, model_name: str, model_data: bytes) -> None:
        self.model_name = model_name
        self.session = onnxruntime.InferenceSession(model_data,
                                                    providers=["CPUExecutionProvider"])
        self.is_ready = True
        self.is_model_ready = True
        # (status, body) every infer request is answered with instead of running the model.
        self.infer_failure: tuple[int, bytes] | None = None
        self.infer_batch_sizes: list[int] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        # A short poll interval lets stop() return at once instead of after half a second.
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,),
                                        daemon=True)

    def __enter__(self) -> KServeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops listening and drops open keep-alive connections, as a dead server would."""
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def metadata(self) -> dict[str, Any]:
        (tensor_in,), (tensor_out,) = self.session.get_inputs(), self.session.get_outputs()
        return {
            "name": self.model_name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": tensor_in.name, "datatype": "FP32",
                        "shape": [-1, tensor_in.shape[1]]}],
            "outputs": [{"name": tensor_out.name, "datatype": "FP32",
                         "shape": [-1, tensor_out.shape[1]]}],
        }

    def infer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        (tensor_in,), (tensor_out,) = self.session.get_inputs(), self.session.get_outputs()
        (given,) = request["inputs"]
        if given["name"] != tensor_in.name or given["datatype"] != "FP32":
            return 400, {"error": f"expected input {tensor_in.name} of FP32"}
        batch = np.asarray(given["data"], dtype=np.float32).reshape(given["shape"])
        self.infer_batch_sizes.append(batch.shape[0])
        scores = self.session.run([tensor_out.name], {tensor_in.name: batch})[0]
        return 200, {
            "model_name": self.model_name,
            "model_version": "1",
            "outputs": [{"name": tensor_out.name, "datatype": "FP32",
                         "shape": list(scores.shape), "data": scores.ravel().tolist()}],
        }


def _handler_for(server: KServeServer) -> type[BaseHTTPRequestHandler]:
    model_path = f"/v2/models/{server.model_name}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/v2/health/ready":
                self._answer(200 if server.is_ready else 503, {})
            elif self.path == model_path:
                self._answer(200, server.metadata())
            elif self.path == f"{model_path}/ready":
                self._answer(200 if server.is_model_ready else 503, {})
            else:
                self._answer(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != f"{model_path}/infer":
                self._answer(404, {"error": f"no route {self.path}"})
            elif server.infer_failure is not None:
                status, failure = server.infer_failure
                self._send(status, failure)
            else:
                self._answer(*server.infer(json.loads(body)))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(HTTPStatus(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
