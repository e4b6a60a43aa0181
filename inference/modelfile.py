"""A model file's identity and the checks a bidder runs before it serves one.

An offer-scoring model is one ONNX file that carries its own identity in ONNX custom metadata
(written by ``inference/train.py``): its name and version, the feature schema it was trained on,
and golden inputs with the outputs the exporter's onnxruntime produced for them. Reading the
metadata with onnxruntime (imported only when a file is inspected) keeps the onnx package
off the serving path.

The checks, in the order a loader runs them:

- ``verify_sha256``: the bytes are the file the registry recorded, not a truncated or
  swapped copy;
- ``inspect_model``: the bytes are a loadable ONNX model with the metadata, input and output
  this bidder feeds and reads;
- ``check_schema``: the model reads features the way this bidder builds them; a model trained on
  another schema would read one feature as another and score nonsense without an error;
- ``golden_check``: the provider that will serve the model reproduces the exporter's scores
  (a provider that quantizes or mis-compiles the model fails here, before it sees traffic).

Django-free: the bidder runs these when it loads or hot-swaps a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.features import FEATURE_COUNT, INPUT_NAME, OUTPUT_NAME, OUTPUTS, SCHEMA_VERSION

NAME_KEY = "model_name"
VERSION_KEY = "model_version"
SCHEMA_VERSION_KEY = "feature_schema_version"
GOLDEN_INPUTS_KEY = "golden_inputs"
GOLDEN_OUTPUTS_KEY = "golden_outputs"
DESCRIPTION_KEY = "description"
METADATA_KEYS = (NAME_KEY, VERSION_KEY, SCHEMA_VERSION_KEY, GOLDEN_INPUTS_KEY,
                 GOLDEN_OUTPUTS_KEY, DESCRIPTION_KEY)

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_PATH = ASSETS_DIR / "offer-scoring-1.onnx"

_ONNX_FLOAT = "tensor(float)"


class ModelFileError(Exception):
    """A model file this bidder cannot serve; the message says why."""


class SchemaMismatch(ModelFileError):
    """The model was trained on another feature schema than the one this bidder builds."""


class ChecksumMismatch(ModelFileError):
    """The bytes are not the file whose sha256 was recorded."""


class GoldenMismatch(ModelFileError):
    """The provider's scores for the golden inputs differ from the exporter's."""


@dataclass(frozen=True, slots=True, eq=False)
class ModelInfo:
    """What a model file says about itself; the golden arrays are read-only."""

    name: str
    version: str
    schema_version: int
    sha256: str
    golden_inputs: npt.NDArray[np.float32]
    golden_outputs: npt.NDArray[np.float32]
    description: str


def inspect_model(data: bytes) -> ModelInfo:
    """Read a model file's identity and check its input and output.

    The input must be float32 ``[batch, features]`` with a symbolic batch dimension (the
    batcher sends any number of rows) and the output float32 ``[batch, 2]``. The feature
    width is checked against FEATURE_COUNT only when the model claims this bidder's schema
    version: for another version, ``check_schema`` gives the clearer refusal.
    """
    from onnxruntime import InferenceSession  # type: ignore[import-untyped, unused-ignore]
    from onnxruntime.capi.onnxruntime_pybind11_state import (  # type: ignore[import-untyped, unused-ignore]
        Fail,
        InvalidArgument,
        InvalidGraph,
        InvalidProtobuf,
        NotImplemented,
        RuntimeException,
    )

    try:
        session = InferenceSession(data, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NotImplemented,
            RuntimeException) as error:
        raise ModelFileError(f"not a loadable ONNX model: {error}") from error
    metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise ModelFileError(f"model metadata lacks {', '.join(missing)}")
    name, version = metadata[NAME_KEY], metadata[VERSION_KEY]
    try:
        schema_version = int(metadata[SCHEMA_VERSION_KEY])
    except ValueError:
        raise ModelFileError(f"model {name} {version}: {SCHEMA_VERSION_KEY} "
                             f"{metadata[SCHEMA_VERSION_KEY]!r} is not a whole number") from None

    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != _ONNX_FLOAT \
            or not _is_batch_of(inputs[0].shape):
        raise ModelFileError(f"model {name} {version}: expected one input {INPUT_NAME!r} float32 "
                             f"[batch, features], found {_describe(inputs)}")
    width = inputs[0].shape[1]
    if schema_version == SCHEMA_VERSION and width != FEATURE_COUNT:
        raise ModelFileError(f"model {name} {version}: input {INPUT_NAME!r} takes {width} "
                             f"features; schema {SCHEMA_VERSION} has {FEATURE_COUNT}")
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME or outputs[0].type != _ONNX_FLOAT \
            or not _is_batch_of(outputs[0].shape) or outputs[0].shape[1] != len(OUTPUTS):
        raise ModelFileError(f"model {name} {version}: expected one output {OUTPUT_NAME!r} "
                             f"float32 [batch, {len(OUTPUTS)}], found {_describe(outputs)}")

    golden_inputs = _golden_array(metadata, key=GOLDEN_INPUTS_KEY, width=width, model=name,
                                  version=version)
    golden_outputs = _golden_array(metadata, key=GOLDEN_OUTPUTS_KEY, width=len(OUTPUTS),
                                   model=name, version=version)
    if len(golden_inputs) != len(golden_outputs) or len(golden_inputs) == 0:
        raise ModelFileError(f"model {name} {version}: {len(golden_inputs)} golden inputs but "
                             f"{len(golden_outputs)} golden outputs")
    return ModelInfo(name=name, version=version, schema_version=schema_version,
                     sha256=hashlib.sha256(data).hexdigest(), golden_inputs=golden_inputs,
                     golden_outputs=golden_outputs, description=metadata[DESCRIPTION_KEY])


def check_schema(info: ModelInfo) -> None:
    """Refuse a model trained on another feature schema than this bidder builds."""
    if info.schema_version != SCHEMA_VERSION:
        raise SchemaMismatch(f"model {info.name} {info.version} uses feature schema "
                             f"{info.schema_version}; this bidder builds schema {SCHEMA_VERSION}")


def verify_sha256(data: bytes, expected: str) -> None:
    """Refuse bytes whose sha256 is not the recorded one (hex, any case)."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.strip().lower():
        raise ChecksumMismatch(f"model file sha256 is {actual}, expected {expected}")


def golden_check(infer: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
                 info: ModelInfo, *, tolerance: float = 1e-4) -> float:
    """Score the golden inputs with ``infer`` and return the largest absolute error.

    Raises GoldenMismatch when the error exceeds ``tolerance``, when the scores are not finite,
    or when their shape differs from the golden outputs'.
    """
    scores = np.asarray(infer(info.golden_inputs), dtype=np.float32)
    if scores.shape != info.golden_outputs.shape:
        raise GoldenMismatch(f"model {info.name} {info.version}: golden inputs scored with shape "
                             f"{list(scores.shape)}, expected {list(info.golden_outputs.shape)}")
    error = float(np.max(np.abs(scores - info.golden_outputs)))
    if not error <= tolerance:
        raise GoldenMismatch(f"model {info.name} {info.version}: golden outputs differ by "
                             f"{error:.3g} (tolerance {tolerance:g})")
    return error


def default_model_manifest() -> dict[str, Any]:
    """The manifest written beside the shipped model by ``inference/train.py``."""
    manifest: dict[str, Any] = json.loads(DEFAULT_MODEL_PATH.with_suffix(".json").read_text())
    return manifest


def _is_batch_of(shape: list[Any]) -> bool:
    """A rank-2 shape whose first dimension is symbolic and second a fixed size."""
    return (len(shape) == 2 and not isinstance(shape[0], int) and isinstance(shape[1], int))


def _describe(values: list[Any]) -> str:
    if not values:
        return "none"
    return ", ".join(f"{value.name!r} {value.type} {value.shape}" for value in values)


def _golden_array(metadata: dict[str, str], *, key: str, width: int, model: str,
                  version: str) -> npt.NDArray[np.float32]:
    try:
        array = np.array(json.loads(metadata[key]), dtype=np.float32)
    except (ValueError, TypeError):
        raise ModelFileError(f"model {model} {version}: {key} is not a JSON list of lists of "
                             "numbers") from None
    if array.ndim != 2 or array.shape[1] != width:
        raise ModelFileError(f"model {model} {version}: {key} has shape {list(array.shape)}, "
                             f"expected [k, {width}]")
    array.flags.writeable = False
    return array
