"""The shipped offer-scoring model, the model-file checks and the training script."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference import train
from inference.features import FEATURE_COUNT, INPUT_NAME, OUTPUT_NAME, SCHEMA_VERSION, build_row
from inference.modelfile import (
    DEFAULT_MODEL_PATH,
    ChecksumMismatch,
    GoldenMismatch,
    ModelFileError,
    SchemaMismatch,
    check_schema,
    default_model_manifest,
    golden_check,
    inspect_model,
    verify_sha256,
)


def _cpu_infer(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]


def _with_metadata(data: bytes, **changes: str) -> bytes:
    """The model with some metadata values replaced (or removed, for an empty string)."""
    model = onnx.load_from_string(data)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    metadata.update(changes)
    del model.metadata_props[:]
    helper.set_model_props(model, {key: value for key, value in metadata.items() if value})
    return model.SerializeToString()


def _synthetic_rows(rows: int) -> np.ndarray:
    return train.synthetic_dataset(rows=rows, seed=11).features


@pytest.fixture(scope="module")
def shipped() -> bytes:
    return DEFAULT_MODEL_PATH.read_bytes()


def test_reading_a_model_file_loads_neither_django_nor_onnx():
    """The bidder inspects models; onnx is a training dependency and Django stays off the path."""
    code = ("import sys\n"
            "from inference.modelfile import DEFAULT_MODEL_PATH, check_schema, inspect_model\n"
            "check_schema(inspect_model(DEFAULT_MODEL_PATH.read_bytes()))\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & {'django', 'onnx'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_the_manifest_records_the_shipped_file(shipped):
    manifest = default_model_manifest()

    assert manifest["sha256"] == hashlib.sha256(shipped).hexdigest()
    assert (manifest["name"], manifest["version"], manifest["file"],
            manifest["feature_schema_version"]) == ("offer-scoring", "1", DEFAULT_MODEL_PATH.name,
                                                    SCHEMA_VERSION)
    assert manifest["rows"] == train.DEFAULT_ROWS
    assert manifest["metrics"]["ctr"]["log_loss"] < manifest["metrics"]["ctr"]["baseline_log_loss"]
    assert manifest["metrics"]["cvr"]["log_loss"] < manifest["metrics"]["cvr"]["baseline_log_loss"]


def test_the_shipped_model_says_who_it_is(shipped):
    info = inspect_model(shipped)

    assert (info.name, info.version, info.schema_version) == ("offer-scoring", "1",
                                                              SCHEMA_VERSION)
    assert info.sha256 == hashlib.sha256(shipped).hexdigest()
    assert info.golden_inputs.shape == (len(train.golden_examples()), FEATURE_COUNT)
    assert info.golden_outputs.shape == (len(train.golden_examples()), 2)
    assert (info.golden_inputs.dtype, info.golden_outputs.dtype) == (np.float32, np.float32)
    check_schema(info)


def test_the_shipped_golden_inputs_are_the_builders_rows_of_the_golden_examples(shipped):
    """A change to the feature encoding without a new schema version fails here."""
    info = inspect_model(shipped)

    np.testing.assert_array_equal(info.golden_inputs, np.stack(
        [build_row(user=user, offer=offer, context=context)
         for user, offer, context in train.golden_examples()]))


def test_the_shipped_model_is_small(shipped):
    assert len(shipped) < 50_000


def test_cpu_scores_equal_a_numpy_forward_pass_of_the_initializers(shipped):
    model = onnx.load_from_string(shipped)
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    inputs = np.concatenate([inspect_model(shipped).golden_inputs, _synthetic_rows(400)])

    hidden = np.maximum(inputs @ weights["hidden_weight"] + weights["hidden_bias"], 0)
    expected = 1 / (1 + np.exp(-(hidden @ weights["output_weight"] + weights["output_bias"])))
    scores = _cpu_infer(shipped)(inputs)

    assert [node.op_type for node in model.graph.node] == ["Gemm", "Relu", "Gemm", "Sigmoid"]
    assert scores.shape == (len(inputs), 2)
    assert float(np.max(np.abs(scores - expected))) <= 1e-5


def test_the_golden_check_passes_on_the_cpu_provider(shipped):
    info = inspect_model(shipped)

    assert golden_check(_cpu_infer(shipped), info) <= 1e-6


def test_scores_are_probabilities(shipped):
    inputs = np.concatenate([inspect_model(shipped).golden_inputs, _synthetic_rows(400)])

    scores = _cpu_infer(shipped)(inputs)

    assert scores.dtype == np.float32
    assert bool(np.all((scores > 0) & (scores < 1)))


def test_a_model_built_for_another_schema_is_refused(shipped):
    info = inspect_model(_with_metadata(shipped, model_version="3", feature_schema_version="2"))

    with pytest.raises(SchemaMismatch) as refused:
        check_schema(info)

    assert str(refused.value) == ("model offer-scoring 3 uses feature schema 2; this bidder "
                                  "builds schema 1")


def test_bytes_that_are_not_onnx_are_refused():
    with pytest.raises(ModelFileError) as refused:
        inspect_model(b"this is not an ONNX model")

    assert str(refused.value).startswith("not a loadable ONNX model: ")


def test_missing_metadata_keys_are_named(shipped):
    with pytest.raises(ModelFileError) as refused:
        inspect_model(_with_metadata(shipped, golden_outputs="", description=""))

    assert str(refused.value) == "model metadata lacks golden_outputs, description"


def test_a_schema_version_that_is_not_a_number_is_refused(shipped):
    with pytest.raises(ModelFileError) as refused:
        inspect_model(_with_metadata(shipped, feature_schema_version="one"))

    assert str(refused.value) == ("model offer-scoring 1: feature_schema_version 'one' is not "
                                  "a whole number")


def test_golden_outputs_of_the_wrong_shape_are_refused(shipped):
    with pytest.raises(ModelFileError) as refused:
        inspect_model(_with_metadata(shipped, golden_outputs="[[0.5], [0.5]]"))

    assert str(refused.value) == ("model offer-scoring 1: golden_outputs has shape [2, 1], "
                                  "expected [k, 2]")


def _identity_model(*, width: int, batch: str | int = "batch") -> bytes:
    """A model that returns its first two inputs, with complete metadata for schema 1."""
    graph = helper.make_graph(
        [helper.make_node("Slice", [INPUT_NAME, "starts", "ends", "axes"], [OUTPUT_NAME])],
        "identity",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, 2])],
        initializer=[numpy_helper.from_array(np.array([value], dtype=np.int64), name)
                     for name, value in (("starts", 0), ("ends", 2), ("axes", 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {
        "model_name": "identity", "model_version": "1", "feature_schema_version": "1",
        "golden_inputs": json.dumps([[0.25] * width]), "golden_outputs": "[[0.25, 0.25]]",
        "description": "test model"})
    return model.SerializeToString()


def test_an_input_of_another_width_is_refused_for_this_schema():
    with pytest.raises(ModelFileError) as refused:
        inspect_model(_identity_model(width=3))

    assert str(refused.value) == ("model identity 1: input 'features' takes 3 features; "
                                  "schema 1 has 74")


def test_an_input_with_a_fixed_batch_is_refused():
    with pytest.raises(ModelFileError) as refused:
        inspect_model(_identity_model(width=FEATURE_COUNT, batch=1))

    assert str(refused.value) == ("model identity 1: expected one input 'features' float32 "
                                  "[batch, features], found 'features' tensor(float) [1, 74]")


def test_a_model_of_the_expected_shape_passes_inspection():
    info = inspect_model(_identity_model(width=FEATURE_COUNT))

    assert golden_check(_cpu_infer(_identity_model(width=FEATURE_COUNT)), info) == 0.0


def test_the_recorded_sha256_passes_and_another_is_refused(shipped):
    verify_sha256(shipped, hashlib.sha256(shipped).hexdigest().upper())

    with pytest.raises(ChecksumMismatch) as refused:
        verify_sha256(shipped, "0" * 64)

    assert str(refused.value) == (f"model file sha256 is {hashlib.sha256(shipped).hexdigest()}, "
                                  f"expected {'0' * 64}")


def test_a_tampered_golden_output_is_caught(shipped):
    golden = inspect_model(shipped).golden_outputs.tolist()
    golden[0][0] += 0.01
    tampered = _with_metadata(shipped, golden_outputs=json.dumps(golden))

    with pytest.raises(GoldenMismatch) as refused:
        golden_check(_cpu_infer(tampered), inspect_model(tampered))

    assert str(refused.value).startswith("model offer-scoring 1: golden outputs differ by 0.01")


def test_scores_that_are_not_numbers_fail_the_golden_check(shipped):
    info = inspect_model(shipped)

    with pytest.raises(GoldenMismatch) as refused:
        golden_check(lambda inputs: np.full((len(inputs), 2), np.nan, dtype=np.float32), info)

    assert str(refused.value) == ("model offer-scoring 1: golden outputs differ by nan "
                                  "(tolerance 0.0001)")


def test_scores_of_the_wrong_shape_fail_the_golden_check(shipped):
    info = inspect_model(shipped)

    with pytest.raises(GoldenMismatch) as refused:
        golden_check(lambda inputs: np.zeros((len(inputs), 1), dtype=np.float32), info)

    assert str(refused.value) == ("model offer-scoring 1: golden inputs scored with shape "
                                  "[8, 1], expected [8, 2]")


def test_training_writes_a_model_that_beats_a_constant_rate(tmp_path: Path, capsys):
    output = tmp_path / "scoring.onnx"

    assert train.main(["--rows", "20000", "--seed", "3", "--version", "9",
                       "--output", str(output)]) == 0

    data = output.read_bytes()
    manifest = json.loads(output.with_suffix(".json").read_text())
    info = inspect_model(data)
    metrics = manifest["metrics"]
    assert (info.name, info.version, info.schema_version) == ("offer-scoring", "9", 1)
    assert (manifest["name"], manifest["version"], manifest["file"], manifest["rows"]) == (
        "offer-scoring", "9", "scoring.onnx", 20000)
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["trained_on"] == "synthetic data (inference/train.py, seed 3)"
    assert metrics["held_out_rows"] == 4000
    assert metrics["ctr"]["auc"] > 0.6
    assert metrics["cvr"]["auc"] > 0.6
    assert metrics["ctr"]["log_loss"] < metrics["ctr"]["baseline_log_loss"]
    assert metrics["cvr"]["log_loss"] < metrics["cvr"]["baseline_log_loss"]
    assert golden_check(_cpu_infer(data), info) <= 1e-6
    printed = capsys.readouterr().out
    assert (f"ctr: log loss {metrics['ctr']['log_loss']:.5f} (constant rate "
            f"{metrics['ctr']['baseline_log_loss']:.5f}), AUC {metrics['ctr']['auc']:.4f}"
            in printed)


def test_training_is_deterministic_for_a_seed(tmp_path: Path):
    for name in ("first.onnx", "second.onnx"):
        train.main(["--rows", "2000", "--seed", "5", "--output", str(tmp_path / name)])

    assert (tmp_path / "first.onnx").read_bytes() == (tmp_path / "second.onnx").read_bytes()


def test_training_on_events_counts_conversions_only_after_clicks(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    lines = []
    for number in range(400):
        is_match = number % 4 == 0
        lines.append(json.dumps({
            "user": {"interests": ["IAB8"], "loyalty_tier": "gold"},
            "offer": {"format": "banner", "category": "IAB8" if is_match else "IAB3",
                      "bid_cpm": 2.0},
            "context": {"device_type": "phone", "os": "ios", "hour_of_week": number % 168},
            "clicked": is_match and number % 8 == 0,
            "converted": number % 16 == 0 or number % 5 == 0,
        }))
    events.write_text("\n".join(lines) + "\n")
    output = tmp_path / "events-model.onnx"

    assert train.main(["--events", str(events), "--output", str(output)]) == 0

    manifest = json.loads(output.with_suffix(".json").read_text())
    assert (manifest["trained_on"], manifest["rows"]) == ("events (events.jsonl)", 400)
    assert manifest["metrics"]["ctr"]["rows"] == 80
    assert manifest["metrics"]["ctr"]["positives"] == 10
    assert manifest["metrics"]["cvr"]["rows"] == 10
    assert manifest["metrics"]["cvr"]["positives"] == 6
    assert inspect_model(output.read_bytes()).version == "1"


def test_an_event_line_without_an_offer_stops_training_with_its_line_number(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"user": {}, "context": {}, "clicked": false}\n')

    with pytest.raises(SystemExit) as stopped:
        train.main(["--events", str(events), "--output", str(tmp_path / "m.onnx")])

    assert str(stopped.value) == "events.jsonl line 1: not an impression event: 'offer'"
    assert not (tmp_path / "m.onnx").exists()
