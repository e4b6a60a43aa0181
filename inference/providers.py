"""Inference providers by name: where the offer-scoring model runs.

``cpu`` is the default and needs nothing but onnxruntime. ``cuda``, ``tensorrt``, ``xdna`` and
``ampere`` are onnxruntime execution providers in this process; ``remote``, ``groq``,
``inferentia2``, ``inferentia3`` and ``tenstorrent`` are models served by an inference server
speaking the KServe v2 (Open Inference Protocol) REST API. A provider whose runtime, endpoint or
hardware is absent raises ``ProviderUnavailable`` naming what is missing; scores only ever come
from a model that really ran.

The bid path imports this module, so it imports no Django; onnxruntime is imported on first use,
which keeps it off the start-up path of every process that only needs the names.
"""

from __future__ import annotations

import glob
import logging
import platform
import sys
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import numpy as np
import numpy.typing as npt

from campaign_express.env import PREFIX, Config
from inference.metrics import PROVIDER_FALLBACKS

logger = logging.getLogger(__name__)

Scores = npt.NDArray[np.float32]

MAX_BATCH: dict[str, int] = {
    "cpu": 32,
    "xdna": 64,
    "ampere": 128,
    "groq": 64,
    "inferentia2": 16,
    "inferentia3": 32,
    "tenstorrent": 32,
    # A GPU amortises its kernel launches over big batches, and a TensorRT engine is built once
    # for the range 1..max_batch (see warm_up); 256 rows of a small MLP still finish well inside
    # a bid's time budget.
    "cuda": 256,
    "tensorrt": 256,
    # One JSON request carries n x F floats; 64 rows keep the body small enough that a call
    # stays inside NPU__REMOTE_TIMEOUT_MS on an ordinary network.
    "remote": 64,
}

_EXECUTION_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "ampere": ("CPUExecutionProvider",),
    # Nodes an accelerator cannot take run on the CPU inside the same session: that is
    # onnxruntime's graph partitioning, not a fallback of the whole model.
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "xdna": ("VitisAIExecutionProvider", "CPUExecutionProvider"),
}

_INSTALL_HINTS: dict[str, str] = {
    "cuda": "install onnxruntime-gpu in place of onnxruntime (it needs the CUDA 12 and cuDNN 9 "
            "libraries)",
    "tensorrt": "install onnxruntime-gpu in place of onnxruntime (it needs the CUDA 12, cuDNN 9 "
                "and TensorRT 10 libraries)",
    "xdna": "install the onnxruntime of AMD's Ryzen AI Software, which carries the Vitis AI "
            "execution provider, in place of onnxruntime",
}

_REMOTE_URL_VARIABLES: dict[str, str] = {
    "remote": f"{PREFIX}NPU__REMOTE_URL",
    "groq": f"{PREFIX}NPU__GROQ_URL",
    "inferentia2": f"{PREFIX}NPU__INFERENTIA2_URL",
    "inferentia3": f"{PREFIX}NPU__INFERENTIA3_URL",
    "tenstorrent": f"{PREFIX}NPU__TENSTORRENT_URL",
}

_ARM64_MACHINES = ("aarch64", "arm64")
_XDNA_DEVICE_NODES = "/dev/accel/accel*"
# Health and metadata calls happen at start-up and on load, not per bid: a slow network should
# not fail start-up the way NPU__REMOTE_TIMEOUT_MS (meant for one inference call) would.
_CONTROL_TIMEOUT_S = 5.0


class ProviderUnavailable(Exception):
    """The provider's runtime, endpoint or hardware is absent; the message says how to fix it."""


class ModelLoadError(Exception):
    """This provider cannot serve the model: corrupt bytes, wrong shape, remote model not ready."""


class InferenceError(Exception):
    """One batch failed; the caller decides whether the request goes without a score."""


@dataclass(frozen=True)
class ModelSource:
    data: bytes
    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


class LoadedModel(Protocol):
    provider: str
    max_batch: int

    def infer(self, batch: Scores) -> Scores: ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


class Provider(Protocol):
    name: str
    max_batch: int

    def load(self, source: ModelSource) -> LoadedModel: ...

    def health(self) -> None: ...


def provider_from_config(config: Config) -> Provider:
    """The configured provider, or cpu when it is unavailable and NPU__FALLBACK=cpu says so.

    The fallback is counted in ``npu_provider_fallbacks_total`` so a fleet silently running on
    CPU shows up on the dashboard instead of only in slower bids.
    """
    requested = config.npu_provider
    try:
        return create_provider(requested, config)
    except ProviderUnavailable as error:
        if config.npu_fallback != "cpu" or requested == "cpu":
            raise
        logger.warning("inference provider %s is unavailable, using cpu instead: %s",
                       requested, error)
        PROVIDER_FALLBACKS.labels(requested=requested).inc()
        return create_provider("cpu", config)


def create_provider(name: str, config: Config) -> Provider:
    """The provider called ``name``, checked with ``health()`` so start-up fails at once."""
    provider: Provider
    if name in _EXECUTION_PROVIDERS:
        provider = SessionProvider(name=name, num_threads=config.npu_num_threads)
    elif name in _REMOTE_URL_VARIABLES:
        provider = KServeProvider(name=name, url=_remote_url(name, config),
                                  model=config.npu_remote_model,
                                  timeout_ms=config.npu_remote_timeout_ms)
    else:
        raise ValueError(f"unknown inference provider {name!r}; one of {', '.join(MAX_BATCH)}")
    provider.health()
    return provider


def _remote_url(name: str, config: Config) -> str:
    urls = {
        "remote": config.npu_remote_url,
        "groq": config.npu_groq_url,
        "inferentia2": config.npu_inferentia2_url,
        "inferentia3": config.npu_inferentia3_url,
        "tenstorrent": config.npu_tenstorrent_url,
    }
    return urls[name].rstrip("/")


def _onnxruntime() -> Any:
    import onnxruntime  # type: ignore[import-untyped]

    return onnxruntime


def _onnxruntime_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises: its own error types, plus the Python wrapper's."""
    state = _onnxruntime().capi.onnxruntime_pybind11_state
    return (state.Fail, state.InvalidArgument, state.NoSuchFile, state.NoModel,
            state.EngineError, state.RuntimeException, state.InvalidProtobuf, state.ModelLoaded,
            state.NotImplemented, state.InvalidGraph, state.EPFail, RuntimeError, ValueError)


def _check_batch(batch: Scores, *, width: int, max_batch: int) -> None:
    if batch.dtype != np.float32 or batch.ndim != 2 or batch.shape[1] != width:
        raise ValueError(f"a batch is float32 [n, {width}], got {batch.dtype} {list(batch.shape)}")
    if not 1 <= batch.shape[0] <= max_batch:
        raise ValueError(f"a batch holds 1 to {max_batch} rows, got {batch.shape[0]}")


@dataclass(frozen=True)
class _Signature:
    input_name: str
    width: int
    output_name: str
    outputs: int


def _signature(session: Any, source: ModelSource) -> _Signature:
    """One float32 input [batch, F] and one float32 output [batch, K], names read from the model."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"{source.label}: needs one input and one output, has "
                             f"{len(inputs)} and {len(outputs)}")
    for tensor in (inputs[0], outputs[0]):
        if (tensor.type != "tensor(float)" or len(tensor.shape) != 2
                or not isinstance(tensor.shape[1], int)):
            raise ModelLoadError(f"{source.label}: {tensor.name} must be float32 [batch, n] with "
                                 f"a fixed n, is {tensor.type} {tensor.shape}")
    return _Signature(input_name=inputs[0].name, width=inputs[0].shape[1],
                      output_name=outputs[0].name, outputs=outputs[0].shape[1])


def _session(source: ModelSource, *, execution_providers: tuple[str, ...], num_threads: int,
             config_entries: dict[str, str]) -> Any:
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads otherwise spin for work: measured, one spun a whole core of a
    # 2-core bidder at 50 requests/s. The bid path's batches are small and come in bursts.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in config_entries.items():
        options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(source.data, sess_options=options,
                                    providers=list(execution_providers))
    except _onnxruntime_errors() as error:
        raise ModelLoadError(f"{source.label}: onnxruntime cannot load it: {error}") from error


class SessionProvider:
    """A model run by an onnxruntime execution provider inside this process."""

    def __init__(self, *, name: str, num_threads: int) -> None:
        self.name = name
        self.max_batch = MAX_BATCH[name]
        self.num_threads = num_threads
        self.execution_providers = _EXECUTION_PROVIDERS[name]
        # Ampere's cores run bfloat16 GEMM at twice the float32 rate; the small loss of
        # precision does not move an offer's rank.
        self.config_entries = (
            {"mlas.enable_gemm_fastmath_arm64_bfloat16": "1"} if name == "ampere" else {})

    def health(self) -> None:
        problems = []
        available = _onnxruntime().get_available_providers()
        missing = [ep for ep in self.execution_providers if ep not in available]
        if missing:
            problems.append(f"this onnxruntime build has no {', '.join(missing)}; "
                            f"{_INSTALL_HINTS.get(self.name, 'reinstall onnxruntime')}")
        if self.name == "xdna" and sys.platform == "linux" and not glob.glob(_XDNA_DEVICE_NODES):
            problems.append(f"no NPU device node matches {_XDNA_DEVICE_NODES}: load the amdxdna "
                            "driver (in Linux 6.14 and later)")
        if self.name == "ampere" and platform.machine().lower() not in _ARM64_MACHINES:
            problems.append(f"needs an ARM64 machine (Ampere Altra or AmpereOne), this one is "
                            f"{platform.machine()}; use the cpu provider here")
        if problems:
            raise ProviderUnavailable(f"{self.name}: " + ". Also, ".join(problems))

    def load(self, source: ModelSource) -> SessionModel:
        session = _session(source, execution_providers=self.execution_providers,
                           num_threads=self.num_threads, config_entries=self.config_entries)
        # onnxruntime-gpu drops an execution provider it cannot start (no driver, missing
        # libraries) with only a log line; refuse rather than serve on the CPU unannounced.
        running = session.get_providers()
        if running[0] != self.execution_providers[0]:
            raise ModelLoadError(f"{self.name}: onnxruntime could not start "
                                 f"{self.execution_providers[0]} for {source.label} (the "
                                 f"session runs on {', '.join(running)}); see its log")
        return SessionModel(provider=self.name, max_batch=self.max_batch, session=session,
                            signature=_signature(session, source), source=source)


class SessionModel:
    def __init__(self, *, provider: str, max_batch: int, session: Any, signature: _Signature,
                 source: ModelSource) -> None:
        self.provider = provider
        self.max_batch = max_batch
        self.source = source
        self._session: Any = session
        self._signature = signature

    def infer(self, batch: Scores) -> Scores:
        _check_batch(batch, width=self._signature.width, max_batch=self.max_batch)
        session = self._session
        if session is None:
            raise InferenceError(f"{self.provider}: {self.source.label} is closed")
        try:
            scores = session.run([self._signature.output_name],
                                 {self._signature.input_name: batch})[0]
        except _onnxruntime_errors() as error:
            raise InferenceError(f"{self.provider}: {self.source.label}: {error}") from error
        expected = (batch.shape[0], self._signature.outputs)
        if scores.dtype != np.float32 or scores.shape != expected:
            raise InferenceError(f"{self.provider}: {self.source.label} answered "
                                 f"{scores.dtype} {scores.shape}, expected float32 {expected}")
        return np.asarray(scores, dtype=np.float32)

    def warm_up(self) -> None:
        """Runs the smallest and largest batch once.

        The first run allocates buffers and, on TensorRT, builds the engine for the shape range
        1..max_batch; without this the first bids after a swap would pay for it.
        """
        for rows in (1, self.max_batch):
            self.infer(np.zeros((rows, self._signature.width), dtype=np.float32))

    def close(self) -> None:
        self._session = None


class KServeProvider:
    """A model served by an inference server over the KServe v2 REST protocol.

    Triton and KServe both speak it, and so do the servers put in front of Groq, Inferentia and
    Tenstorrent. Paths are the plain, unversioned ``/v2/models/{model}``: the server's operator
    decides which version it serves under the name (its version numbers are not our registry's),
    and ``load`` checks that the served model has the same input and output widths as ours.
    """

    def __init__(self, *, name: str, url: str, model: str, timeout_ms: int) -> None:
        self.name = name
        self.max_batch = MAX_BATCH[name]
        self.url = url
        self.model = model
        self.timeout_s = timeout_ms / 1000
        self.url_variable = _REMOTE_URL_VARIABLES[name]

    def _model_path(self) -> str:
        return f"/v2/models/{quote(self.model, safe='')}"

    def health(self) -> None:
        if not self.url:
            raise ProviderUnavailable(f"{self.name}: {self.url_variable} is not set; set it to "
                                      "the base URL of a KServe v2 inference server")
        try:
            with httpx.Client(base_url=self.url, timeout=_CONTROL_TIMEOUT_S) as client:
                response = client.get("/v2/health/ready")
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"{self.name}: cannot reach the KServe v2 server at "
                                      f"{self.url}: {error}") from error
        if response.status_code != 200:
            raise ProviderUnavailable(f"{self.name}: the KServe v2 server at {self.url} is not "
                                      f"ready (GET /v2/health/ready answered "
                                      f"{response.status_code})")

    def load(self, source: ModelSource) -> KServeModel:
        local = _session(source, execution_providers=("CPUExecutionProvider",), num_threads=1,
                         config_entries={})
        signature = _signature(local, source)
        where = f"{self.name}: model {self.model} on {self.url}"
        try:
            with httpx.Client(base_url=self.url, timeout=_CONTROL_TIMEOUT_S) as client:
                metadata = client.get(self._model_path())
                ready = client.get(f"{self._model_path()}/ready")
        except httpx.HTTPError as error:
            raise ModelLoadError(f"{where}: {error}") from error
        if metadata.status_code != 200:
            raise ModelLoadError(f"{where}: not on the server (GET {self._model_path()} "
                                 f"answered {metadata.status_code})")
        if ready.status_code != 200:
            raise ModelLoadError(f"{where}: not ready (GET {self._model_path()}/ready answered "
                                 f"{ready.status_code})")
        try:
            body = metadata.json()
            inputs, outputs = body["inputs"], body["outputs"]
            served_input, served_output = inputs[0], outputs[0]
            input_name, output_name = served_input["name"], served_output["name"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ModelLoadError(f"{where}: malformed metadata: {error!r}") from error
        if len(inputs) != 1:
            raise ModelLoadError(f"{where}: takes {len(inputs)} inputs, {source.label} has one")
        checks = ((served_input, signature.width, "input"),
                  (served_output, signature.outputs, "output"))
        for tensor, width, role in checks:
            if tensor.get("datatype") != "FP32" or tensor.get("shape") != [-1, width]:
                raise ModelLoadError(
                    f"{where}: its {role} is {tensor.get('datatype')} {tensor.get('shape')}, "
                    f"{source.label} needs FP32 [-1, {width}]")
        client = httpx.Client(base_url=self.url, timeout=self.timeout_s)
        return KServeModel(provider=self.name, max_batch=self.max_batch, client=client,
                           path=f"{self._model_path()}/infer", input_name=input_name,
                           output_name=output_name, signature=signature, where=where)


class KServeModel:
    """One served model; its pooled keep-alive client saves a TCP handshake per batch.

    ``infer`` blocks, like an onnxruntime session's run; the batcher calls it from a worker
    thread, never on the event loop.
    """

    def __init__(self, *, provider: str, max_batch: int, client: httpx.Client, path: str,
                 input_name: str, output_name: str, signature: _Signature, where: str) -> None:
        self.provider = provider
        self.max_batch = max_batch
        self._client = client
        self._path = path
        self._input_name = input_name
        self._output_name = output_name
        self._signature = signature
        self._where = where

    def infer(self, batch: Scores) -> Scores:
        _check_batch(batch, width=self._signature.width, max_batch=self.max_batch)
        rows = batch.shape[0]
        request = {
            "inputs": [{"name": self._input_name, "shape": [rows, self._signature.width],
                        "datatype": "FP32", "data": batch.ravel().tolist()}],
            "outputs": [{"name": self._output_name}],
        }
        try:
            response = self._client.post(self._path, json=request)
        except httpx.HTTPError as error:
            raise InferenceError(f"{self._where}: {error!r}") from error
        if response.status_code != 200:
            raise InferenceError(f"{self._where}: infer answered {response.status_code}: "
                                 f"{response.text[:200]}")
        expected = [rows, self._signature.outputs]
        try:
            output = response.json()["outputs"][0]
            if output["datatype"] != "FP32" or output["shape"] != expected:
                raise ValueError(f"output is {output['datatype']} {output['shape']}, "
                                 f"expected FP32 {expected}")
            return np.asarray(output["data"], dtype=np.float32).reshape(rows, expected[1])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise InferenceError(f"{self._where}: malformed infer answer: {error}") from error

    def warm_up(self) -> None:
        """Runs the smallest and largest batch once, so the server and connection are warm."""
        for rows in (1, self.max_batch):
            self.infer(np.zeros((rows, self._signature.width), dtype=np.float32))

    def close(self) -> None:
        self._client.close()
