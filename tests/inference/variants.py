"""Model files for tests, derived from the shipped model with the onnx package.

Each variant is a real ONNX file with real golden outputs computed by onnxruntime, unless a
test asks for them to be wrong.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper

from inference.modelfile import (
    DEFAULT_MODEL_PATH,
    GOLDEN_INPUTS_KEY,
    GOLDEN_OUTPUTS_KEY,
    SCHEMA_VERSION_KEY,
    VERSION_KEY,
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
            return
    model.metadata_props.add(key=key, value=value)


def _metadata(model: onnx.ModelProto, key: str) -> str:
    return next(entry.value for entry in model.metadata_props if entry.key == key)


def _add_slow_branch(model: onnx.ModelProto, *, layers: int, width: int) -> None:
    """Adds a branch that depends on the input (so it cannot be folded away), costs
    ``layers`` width×width matrix products per row, and adds exactly zero to the scores."""
    graph = model.graph
    features = graph.input[0].name
    output = graph.output[0].name
    feature_count = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(3)
    graph.initializer.append(numpy_helper.from_array(
        (rng.standard_normal((feature_count, width)) / np.sqrt(feature_count)).astype(
            np.float32), "slow_in"))
    previous = "slow_0"
    graph.node.append(helper.make_node("MatMul", [features, "slow_in"], [previous]))
    for layer in range(layers):
        weight = f"slow_w{layer}"
        graph.initializer.append(numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), weight))
        graph.node.append(helper.make_node("MatMul", [previous, weight], [f"slow_m{layer}"]))
        graph.node.append(helper.make_node("Tanh", [f"slow_m{layer}"], [f"slow_{layer + 1}"]))
        previous = f"slow_{layer + 1}"
    graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1), np.float32), "slow_zero"))
    graph.node.append(helper.make_node("ReduceSum", [previous], ["slow_sum"], keepdims=1,
                                       axes=[1]) if model.opset_import[0].version < 13 else
                      helper.make_node("ReduceSum", [previous, "slow_axes"], ["slow_sum"],
                                       keepdims=1))
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "slow_axes"))
    graph.node.append(helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]))
    # Rename the original output and add the branch to it.
    producer = next(node for node in graph.node if output in node.output)
    producer.output[list(producer.output).index(output)] = "scores_before_slow"
    graph.node.append(helper.make_node("Add", ["scores_before_slow", "slow_nothing"], [output]))


def variant(*, version: str, scale: float = 1.0, schema_version: int | None = None,
            wrong_golden: bool = False, slow_layers: int = 0) -> bytes:
    model = onnx.load(str(DEFAULT_MODEL_PATH))
    if scale != 1.0:
        weights = model.graph.initializer[0]
        weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * scale,
                                                 weights.name))
    if slow_layers:
        _add_slow_branch(model, layers=slow_layers, width=256)
    _set_metadata(model, VERSION_KEY, version)
    if schema_version is not None:
        _set_metadata(model, SCHEMA_VERSION_KEY, str(schema_version))
    golden_inputs = np.array(json.loads(_metadata(model, GOLDEN_INPUTS_KEY)), np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    golden_outputs = session.run(None, {session.get_inputs()[0].name: golden_inputs})[0]
    if wrong_golden:
        golden_outputs = golden_outputs + 0.01
    _set_metadata(model, GOLDEN_OUTPUTS_KEY, json.dumps(golden_outputs.tolist()))
    return model.SerializeToString()


def cpu_scores(data: bytes, rows: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: rows})[0]
