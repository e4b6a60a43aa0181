"""Inference providers: real onnxruntime sessions, and a real KServe v2 server for remote ones."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import REGISTRY

from campaign_express import env
from campaign_express.env import Config
from inference.providers import (
    MAX_BATCH,
    InferenceError,
    KServeProvider,
    ModelLoadError,
    ModelSource,
    ProviderUnavailable,
    SessionProvider,
    create_provider,
    provider_from_config,
)
from tests.inference.kserve_server import KServeServer

WIDTH = 8
OUTPUTS = 2
IS_ARM64 = platform.machine().lower() in ("aarch64", "arm64")


def network(width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(width, OUTPUTS)).astype(np.float32)
    bias = rng.normal(size=OUTPUTS).astype(np.float32)
    return weights, bias


def model_bytes(width: int = WIDTH) -> bytes:
    """sigmoid(features @ weights + bias): features float32 [N, width], scores float32 [N, 2]."""
    weights, bias = network(width)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weights"], ["product"]),
         helper.make_node("Add", ["product", "bias"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["scores"])],
        "offer_scoring_test",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", OUTPUTS])],
        initializer=[numpy_helper.from_array(weights, "weights"),
                     numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def numpy_scores(batch: np.ndarray) -> np.ndarray:
    weights, bias = network()
    logits = batch.astype(np.float64) @ weights.astype(np.float64) + bias.astype(np.float64)
    return 1 / (1 + np.exp(-logits))


def features(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).normal(size=(rows, WIDTH)).astype(np.float32)


def fallbacks(requested: str) -> float:
    value = REGISTRY.get_sample_value("npu_provider_fallbacks_total", {"requested": requested})
    return value or 0.0


@pytest.fixture
def source() -> ModelSource:
    return ModelSource(data=model_bytes(), name="offer-scoring", version="3")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)})


@pytest.fixture
def server(source: ModelSource) -> Iterator[KServeServer]:
    with KServeServer(model_name="offer-scoring", model_data=source.data) as running:
        yield running


def test_importing_providers_loads_neither_django_nor_onnxruntime() -> None:
    """The bid path imports this module; onnxruntime loads only when a model does."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, inference.providers; print(sorted(name for name in "
         "sys.modules if name.split('.')[0] in ('django', 'onnxruntime')))"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, check=True)
    assert loaded.stdout == "[]\n"


def test_maximum_batches_are_the_documented_ones() -> None:
    assert MAX_BATCH == {"cpu": 32, "xdna": 64, "ampere": 128, "groq": 64, "inferentia2": 16,
                         "inferentia3": 32, "tenstorrent": 32, "cuda": 256, "tensorrt": 256,
                         "remote": 64}


def test_cpu_scores_equal_numpy_running_the_same_network(config: Config,
                                                         source: ModelSource) -> None:
    provider = create_provider("cpu", config)
    model = provider.load(source)
    batch = features(32)

    scores = model.infer(batch)

    assert (provider.name, provider.max_batch, model.provider, model.max_batch) == (
        "cpu", 32, "cpu", 32)
    assert scores.dtype == np.float32
    assert scores.shape == (32, 2)
    np.testing.assert_allclose(scores, numpy_scores(batch), rtol=0, atol=1e-5)


def test_the_cpu_session_uses_the_configured_threads(config: Config, source: ModelSource) -> None:
    provider = create_provider("cpu", dataclasses.replace(config, npu_num_threads=3))
    assert isinstance(provider, SessionProvider)
    assert provider.num_threads == 3
    np.testing.assert_allclose(provider.load(source).infer(features(5)),
                               numpy_scores(features(5)), rtol=0, atol=1e-5)


def test_a_batch_larger_than_the_maximum_is_refused(config: Config, source: ModelSource) -> None:
    model = create_provider("cpu", config).load(source)
    with pytest.raises(ValueError) as error:
        model.infer(features(33))
    assert str(error.value) == "a batch holds 1 to 32 rows, got 33"


def test_a_batch_of_the_wrong_width_or_type_is_refused(config: Config,
                                                       source: ModelSource) -> None:
    model = create_provider("cpu", config).load(source)
    with pytest.raises(ValueError) as error:
        model.infer(np.zeros((2, 7), dtype=np.float32))
    assert str(error.value) == "a batch is float32 [n, 8], got float32 [2, 7]"
    with pytest.raises(ValueError) as error:
        model.infer(np.zeros((2, 8), dtype=np.float64))
    assert str(error.value) == "a batch is float32 [n, 8], got float64 [2, 8]"


def test_warm_up_runs_and_the_model_still_scores(config: Config, source: ModelSource) -> None:
    model = create_provider("cpu", config).load(source)
    model.warm_up()
    np.testing.assert_allclose(model.infer(features(1)), numpy_scores(features(1)), rtol=0,
                               atol=1e-5)


def test_a_closed_model_refuses_to_score(config: Config, source: ModelSource) -> None:
    model = create_provider("cpu", config).load(source)
    model.close()
    with pytest.raises(InferenceError) as error:
        model.infer(features(1))
    assert str(error.value) == "cpu: offer-scoring v3 is closed"


def test_corrupt_bytes_are_a_model_load_error(config: Config) -> None:
    provider = create_provider("cpu", config)
    with pytest.raises(ModelLoadError) as error:
        provider.load(ModelSource(data=b"not an onnx model", name="offer-scoring", version="4"))
    assert str(error.value).startswith("offer-scoring v4: onnxruntime cannot load it: ")


def test_a_model_with_an_unfixed_feature_width_is_a_model_load_error(config: Config) -> None:
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["features"], ["scores"])], "unfixed",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", "F"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "F"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    source = ModelSource(data=model.SerializeToString(), name="offer-scoring", version="5")
    with pytest.raises(ModelLoadError) as error:
        create_provider("cpu", config).load(source)
    assert str(error.value) == ("offer-scoring v5: features must be float32 [batch, n] with a "
                                "fixed n, is tensor(float) ['N', 'F']")


def test_remote_scores_equal_the_local_cpu_providers(config: Config, source: ModelSource,
                                                     server: KServeServer) -> None:
    remote = create_provider("remote", dataclasses.replace(config, npu_remote_url=server.url))
    local = create_provider("cpu", config).load(source)
    model = remote.load(source)
    batch = features(20)

    scores = model.infer(batch)

    assert (remote.name, model.provider, model.max_batch) == ("remote", "remote", 64)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, local.infer(batch))
    assert server.infer_batch_sizes == [20]
    model.close()


def test_remote_warm_up_sends_the_smallest_and_largest_batch(config: Config, source: ModelSource,
                                                            server: KServeServer) -> None:
    remote = create_provider("remote", dataclasses.replace(config, npu_remote_url=server.url))
    model = remote.load(source)
    model.warm_up()
    assert server.infer_batch_sizes == [1, 64]
    model.close()


def test_remote_health_names_the_url_when_the_server_is_stopped(config: Config,
                                                                server: KServeServer) -> None:
    remote = create_provider("remote", dataclasses.replace(config, npu_remote_url=server.url))
    server.stop()
    with pytest.raises(ProviderUnavailable) as error:
        remote.health()
    assert str(error.value).startswith(
        f"remote: cannot reach the KServe v2 server at {server.url}: ")


def test_remote_health_fails_while_the_server_is_not_ready(config: Config,
                                                           server: KServeServer) -> None:
    server.is_ready = False
    with pytest.raises(ProviderUnavailable) as error:
        create_provider("remote", dataclasses.replace(config, npu_remote_url=server.url))
    assert str(error.value) == (f"remote: the KServe v2 server at {server.url} is not ready "
                                "(GET /v2/health/ready answered 503)")


def test_remote_infer_error_is_an_inference_error(config: Config, source: ModelSource,
                                                  server: KServeServer) -> None:
    model = create_provider("remote", dataclasses.replace(
        config, npu_remote_url=server.url)).load(source)
    server.infer_failure = (500, b'{"error": "out of device memory"}')
    with pytest.raises(InferenceError) as error:
        model.infer(features(2))
    assert str(error.value) == (f"remote: model offer-scoring on {server.url}: infer answered "
                                '500: {"error": "out of device memory"}')
    assert server.infer_batch_sizes == []
    model.close()


def test_a_malformed_remote_answer_is_an_inference_error(config: Config, source: ModelSource,
                                                         server: KServeServer) -> None:
    model = create_provider("remote", dataclasses.replace(
        config, npu_remote_url=server.url)).load(source)
    server.infer_failure = (200, b'{"outputs": []}')
    with pytest.raises(InferenceError) as error:
        model.infer(features(2))
    assert str(error.value) == (f"remote: model offer-scoring on {server.url}: malformed infer "
                                "answer: list index out of range")
    model.close()


def test_remote_load_refuses_a_model_whose_width_does_not_match(
        config: Config, server: KServeServer) -> None:
    remote = create_provider("remote", dataclasses.replace(config, npu_remote_url=server.url))
    narrower = ModelSource(data=model_bytes(width=6), name="offer-scoring", version="3")
    with pytest.raises(ModelLoadError) as error:
        remote.load(narrower)
    assert str(error.value) == (f"remote: model offer-scoring on {server.url}: its input is "
                                "FP32 [-1, 8], offer-scoring v3 needs FP32 [-1, 6]")


def test_remote_load_refuses_a_model_the_server_does_not_have(
        config: Config, source: ModelSource, server: KServeServer) -> None:
    remote = create_provider("remote", dataclasses.replace(
        config, npu_remote_url=server.url, npu_remote_model="other-model"))
    with pytest.raises(ModelLoadError) as error:
        remote.load(source)
    assert str(error.value) == (f"remote: model other-model on {server.url}: not on the server "
                                "(GET /v2/models/other-model answered 404)")


def test_remote_load_refuses_a_model_that_is_not_ready(config: Config, source: ModelSource,
                                                       server: KServeServer) -> None:
    remote = create_provider("remote", dataclasses.replace(config, npu_remote_url=server.url))
    server.is_model_ready = False
    with pytest.raises(ModelLoadError) as error:
        remote.load(source)
    assert str(error.value) == (f"remote: model offer-scoring on {server.url}: not ready "
                                "(GET /v2/models/offer-scoring/ready answered 503)")


def test_groq_pointed_at_a_kserve_server_scores_like_cpu(config: Config, source: ModelSource,
                                                         server: KServeServer) -> None:
    groq_config = dataclasses.replace(config, npu_provider="groq", npu_groq_url=server.url)
    provider = provider_from_config(groq_config)
    model = provider.load(source)
    batch = features(20)

    scores = model.infer(batch)

    assert isinstance(provider, KServeProvider)
    assert (provider.name, provider.max_batch, provider.url) == ("groq", 64, server.url)
    np.testing.assert_array_equal(scores, create_provider("cpu", config).load(source).infer(batch))
    model.close()


@pytest.mark.parametrize(("name", "variable"), [
    ("remote", "CAMPAIGN_EXPRESS__NPU__REMOTE_URL"),
    ("groq", "CAMPAIGN_EXPRESS__NPU__GROQ_URL"),
    ("inferentia2", "CAMPAIGN_EXPRESS__NPU__INFERENTIA2_URL"),
    ("inferentia3", "CAMPAIGN_EXPRESS__NPU__INFERENTIA3_URL"),
    ("tenstorrent", "CAMPAIGN_EXPRESS__NPU__TENSTORRENT_URL"),
])
def test_a_remote_provider_without_its_url_names_the_variable(config: Config, name: str,
                                                              variable: str) -> None:
    with pytest.raises(ProviderUnavailable) as error:
        create_provider(name, config)
    assert str(error.value) == (f"{name}: {variable} is not set; set it to the base URL of a "
                                "KServe v2 inference server")


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="this onnxruntime is the GPU build")
def test_cuda_needs_the_gpu_build_of_onnxruntime(config: Config) -> None:
    with pytest.raises(ProviderUnavailable) as error:
        create_provider("cuda", config)
    assert str(error.value) == (
        "cuda: this onnxruntime build has no CUDAExecutionProvider; install onnxruntime-gpu in "
        "place of onnxruntime (it needs the CUDA 12 and cuDNN 9 libraries)")


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                    reason="this onnxruntime is the GPU build")
def test_tensorrt_needs_the_gpu_build_of_onnxruntime(config: Config) -> None:
    with pytest.raises(ProviderUnavailable) as error:
        create_provider("tensorrt", config)
    assert str(error.value) == (
        "tensorrt: this onnxruntime build has no TensorrtExecutionProvider, "
        "CUDAExecutionProvider; install onnxruntime-gpu in place of onnxruntime (it needs the "
        "CUDA 12, cuDNN 9 and TensorRT 10 libraries)")


@pytest.mark.skipif(
    "VitisAIExecutionProvider" in onnxruntime.get_available_providers()
    or Path("/dev/accel/accel0").exists() or platform.system() != "Linux",
    reason="this machine has the Ryzen AI runtime or an NPU device node")
def test_xdna_names_the_missing_runtime_and_device_node(config: Config) -> None:
    with pytest.raises(ProviderUnavailable) as error:
        create_provider("xdna", config)
    assert str(error.value) == (
        "xdna: this onnxruntime build has no VitisAIExecutionProvider; install the onnxruntime "
        "of AMD's Ryzen AI Software, which carries the Vitis AI execution provider, in place of "
        "onnxruntime. Also, no NPU device node matches /dev/accel/accel*: load the amdxdna "
        "driver (in Linux 6.14 and later)")


@pytest.mark.skipif(IS_ARM64, reason="the refusal is for machines that are not ARM64")
def test_ampere_refuses_a_machine_that_is_not_arm64(config: Config) -> None:
    with pytest.raises(ProviderUnavailable) as error:
        create_provider("ampere", config)
    assert str(error.value) == (
        "ampere: needs an ARM64 machine (Ampere Altra or AmpereOne), this one is "
        f"{platform.machine()}; use the cpu provider here")


@pytest.mark.skipif(not IS_ARM64, reason="needs an ARM64 machine")
def test_ampere_scores_on_arm64(config: Config, source: ModelSource) -> None:
    model = create_provider("ampere", config).load(source)
    # bfloat16 fast-math GEMM keeps about three significant digits.
    np.testing.assert_allclose(model.infer(features(16)), numpy_scores(features(16)), rtol=0,
                               atol=1e-2)


@pytest.mark.skipif(IS_ARM64, reason="ampere is available on ARM64")
def test_fallback_to_cpu_is_counted_once_for_the_requested_provider(config: Config,
                                                                    source: ModelSource) -> None:
    before = fallbacks("ampere")
    provider = provider_from_config(dataclasses.replace(config, npu_provider="ampere",
                                                        npu_fallback="cpu"))
    assert (provider.name, provider.max_batch) == ("cpu", 32)
    assert fallbacks("ampere") == before + 1
    np.testing.assert_allclose(provider.load(source).infer(features(3)),
                               numpy_scores(features(3)), rtol=0, atol=1e-5)


def test_fallback_to_cpu_for_an_unset_endpoint(config: Config) -> None:
    before = fallbacks("inferentia2")
    provider = provider_from_config(dataclasses.replace(config, npu_provider="inferentia2",
                                                        npu_fallback="cpu"))
    assert provider.name == "cpu"
    assert fallbacks("inferentia2") == before + 1


def test_without_fallback_an_unavailable_provider_stops_start_up_and_is_not_counted(
        config: Config) -> None:
    before = fallbacks("tenstorrent")
    with pytest.raises(ProviderUnavailable) as error:
        provider_from_config(dataclasses.replace(config, npu_provider="tenstorrent"))
    assert str(error.value) == ("tenstorrent: CAMPAIGN_EXPRESS__NPU__TENSTORRENT_URL is not set; "
                                "set it to the base URL of a KServe v2 inference server")
    assert fallbacks("tenstorrent") == before


def test_the_default_config_selects_cpu(config: Config) -> None:
    before = fallbacks("cpu")
    assert provider_from_config(config).name == "cpu"
    assert fallbacks("cpu") == before
