"""Train the default offer-scoring model and export it as ONNX with its manifest.

Usage::

    python -m inference.train [--rows N] [--seed S] [--version V] [--output PATH]
                              [--events PATH]

Without ``--events`` the model learns from synthetic impressions; the shipped
``inference/assets/offer-scoring-1.onnx`` is this script's output with its defaults. The model
is a small MLP, ``FEATURE_COUNT -> 32 ReLU -> 2 sigmoid`` (``ctr``: probability of a click on
an impression; ``cvr``: probability of a conversion after a click), trained with NumPy only
(mini-batch Adam on binary cross-entropy), so a run is deterministic for a seed and needs no
deep-learning framework. Features come from ``inference.features.build_matrix``, the function
the bidder calls, so training and serving encode alike.

The last 20% of the rows are held out; the script prints, for each output, the held-out log
loss and AUC next to the log loss of a constant rate (the training rate). Exporting needs the
``onnx`` package (the ``train`` extra); serving does not.

Synthetic data: assumptions
---------------------------

These are assumptions chosen to look like display advertising, not measurements; the point is
a model whose scores respond to the features the way a real one would, so the bidder, the
rollout checks and the tests exercise something meaningful. Retrain on exported events before
trusting its numbers.

- Each request has one user and one context and 4 candidate offers drawn from a catalog of 400
  offers.
- Offers: format banner 50%, native 25%, video 20%, audio 5%; IAB top-level category uniform;
  max bid CPM log-normal with median 2.0; 30% target one audience segment; each offer has a
  hidden quality ``q ~ Normal(0, 0.4)`` (logit scale). 75% have a historical CTR, observed as
  the offer's base rate ``sigmoid(base_logit(format) + q)`` times log-normal noise (sigma 0.25).
- Users: 1-5 interests (IAB top levels, 30% written as a sub-category such as ``IAB8-3``);
  0-3 of 12 segments; loyalty tier none 60%, green 25%, gold 11%, reserve 4%, with a
  log-normal balance of median 500, 3000 and 15000 points for green, gold and reserve (0 for
  none); recency unknown for 20%, otherwise log-normal hours with median 24.
- Contexts: device types in the proportions of ``_DEVICE_SHARES``; an OS that fits the device;
  hour of week uniform; site/app category unknown 5%, else uniform (30% as a sub-category);
  apps 60% on handhelds, 5% on desktops, 90% on TVs, never out of home; 10% interstitial;
  ad position unknown 40%, above the fold 35%, below 25%.
- Frequency-cap use: 0 for 60% of (user, offer) pairs, else uniform in [0, 1].

True click-through rate, on the logit scale:

- base CTR by format on a desktop with nothing matching: banner 0.2%, native 0.4%,
  video 0.8%, audio 0.3%; plus the offer's quality ``q``;
- +1.0 when the offer's category is one of the user's interests, +0.4 when it equals the
  site/app category, +0.5 when the user is in a segment the offer targets;
- format x device group (handheld, desktop, TV, out of home): banner +0.2/0/-1.0/-1.5,
  native +0.3/0/-0.5/-1.5, video +0.2/0/+0.6/-1.0, audio +0.3/-0.3/-0.5/-1.5;
- loyalty tier none/green/gold/reserve: 0/+0.1/+0.2/+0.3;
- -1.2 x frequency-cap use (fatigue);
- +0.3 x cos(2 pi (hour of day - 20) / 24) (evening peak), +0.1 at weekends;
- +0.3 x exp(-recency hours / 48) when recency is known;
- +0.1 x log1p(bid CPM) (higher bids win better slots);
- above the fold +0.3, below the fold -0.2, interstitial +0.7.

About 90% of impressions land between 0.1% and 5% CTR; the mean is about 0.8%.

True conversion rate after a click, on the logit scale: base 3%; +0.5 q; +0.8 interest match;
+0.6 segment match; tier none/green/gold/reserve 0/+0.4/+0.8/+1.2; device group
handheld/desktop/TV/out of home 0/+0.3/-0.6/-1.0; +0.4 x exp(-recency hours / 48) when known.

Labels: ``clicked ~ Bernoulli(ctr)``; ``converted ~ Bernoulli(cvr)`` is drawn for every row (the
conversion the user would make after a click), so synthetic data trains the cvr output on all
rows. Real events only know conversions after real clicks, so with ``--events`` the cvr loss
and metrics use clicked rows only.

Events (``--events``)
---------------------

A JSON-lines file, one impression per line, oldest first (the held-out rows are the newest)::

    {"user": {...}, "offer": {...}, "context": {...}, "clicked": true, "converted": false}

``user``, ``offer`` and ``context`` hold the fields of ``UserFeatures``, ``OfferFeatures``
and ``ContextFeatures`` (sets as JSON lists; absent fields take their defaults, ``offer``
needs ``format``, ``category`` and ``bid_cpm``); ``converted`` counts only when ``clicked``.
Joining impressions with their clicks and conversions is the exporter's job; ``--rows`` is
ignored.

Retrain and ship: run the script with its defaults, run the tests in
``tests/inference/test_model.py``, and commit the new ``.onnx`` and ``.json`` together.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.features import (
    FEATURE_COUNT,
    FEATURE_NAMES,
    FORMATS,
    IAB_CATEGORIES,
    INPUT_NAME,
    OUTPUT_NAME,
    OUTPUTS,
    SCHEMA_VERSION,
    ContextFeatures,
    OfferFeatures,
    UserFeatures,
    build_matrix,
    build_row,
)
from inference.modelfile import (
    ASSETS_DIR,
    DESCRIPTION_KEY,
    GOLDEN_INPUTS_KEY,
    GOLDEN_OUTPUTS_KEY,
    NAME_KEY,
    SCHEMA_VERSION_KEY,
    VERSION_KEY,
)

Array = npt.NDArray[np.float32]

MODEL_NAME = "offer-scoring"
DEFAULT_ROWS = 200_000
DEFAULT_SEED = 7
DEFAULT_VERSION = "1"
HIDDEN_UNITS = 32
EPOCHS = 8
BATCH_SIZE = 512
LEARNING_RATE = 2e-3
HELD_OUT_SHARE = 0.2
# Opset 17 and IR version 8 load in every onnxruntime the project supports (1.19 and later).
OPSET = 17
IR_VERSION = 8

OFFERS_PER_REQUEST = 4
CATALOG_SIZE = 400
SEGMENTS = tuple(f"segment_{number}" for number in range(1, 13))
_DEVICE_SHARES = {"mobile": 0.20, "desktop": 0.25, "ctv": 0.08, "phone": 0.25, "tablet": 0.08,
                  "connected_device": 0.04, "set_top_box": 0.05, "ooh": 0.05}
_DEVICE_GROUPS = {"mobile": 0, "phone": 0, "tablet": 0, "desktop": 1, "ctv": 2,
                  "connected_device": 2, "set_top_box": 2, "ooh": 3}
_OS_BY_GROUP = (("ios", "android"), ("windows", "macos", "linux", "chromeos"),
                ("tvos", "roku", "tizen", "webos", "fireos", "android"),
                ("linux", "android", "other"))
_APP_SHARE_BY_GROUP = (0.6, 0.05, 0.9, 0.0)
_FORMAT_SHARES = {"banner": 0.50, "video": 0.20, "native": 0.25, "audio": 0.05}
_TIER_SHARES = {"none": 0.60, "green": 0.25, "gold": 0.11, "reserve": 0.04}
_TIER_MEDIAN_BALANCE = (0.0, 500.0, 3000.0, 15000.0)

_BASE_CTR = {"banner": 0.002, "video": 0.008, "native": 0.004, "audio": 0.003}
_CTR_FORMAT_DEVICE = {"banner": (0.2, 0.0, -1.0, -1.5), "video": (0.2, 0.0, 0.6, -1.0),
                      "native": (0.3, 0.0, -0.5, -1.5), "audio": (0.3, -0.3, -0.5, -1.5)}
_CTR_TIER = (0.0, 0.1, 0.2, 0.3)
_BASE_CVR = 0.03
_CVR_TIER = (0.0, 0.4, 0.8, 1.2)
_CVR_DEVICE_GROUP = (0.0, 0.3, -0.6, -1.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Dataset:
    """Feature rows and labels; ``cvr_weights`` is 1 where a row's conversion label counts."""

    features: Array
    labels: Array
    cvr_weights: Array
    source: str


@dataclasses.dataclass(frozen=True, slots=True)
class Mlp:
    """The network's parameters, named as their ONNX initializers."""

    hidden_weight: Array
    hidden_bias: Array
    output_weight: Array
    output_bias: Array

    def scores(self, features: Array) -> Array:
        hidden = np.maximum(features @ self.hidden_weight + self.hidden_bias, 0)
        return _sigmoid(hidden @ self.output_weight + self.output_bias)


def synthetic_dataset(*, rows: int, seed: int) -> Dataset:
    """Synthetic impressions built as the module docstring describes."""
    rng = np.random.default_rng(seed)
    catalog = _offer_catalog(rng)
    requests = math.ceil(rows / OFFERS_PER_REQUEST)
    features = np.empty((requests * OFFERS_PER_REQUEST, FEATURE_COUNT), dtype=np.float32)
    ctr_logits = np.empty(requests * OFFERS_PER_REQUEST)
    cvr_logits = np.empty(requests * OFFERS_PER_REQUEST)
    column = {name: index for index, name in enumerate(FEATURE_NAMES)}
    for request in range(requests):
        user, tier = _random_user(rng)
        context, device_group = _random_context(rng)
        picks = rng.integers(CATALOG_SIZE, size=OFFERS_PER_REQUEST)
        cap_uses = np.where(rng.random(OFFERS_PER_REQUEST) < 0.6, 0.0,
                            rng.random(OFFERS_PER_REQUEST))
        offers = [dataclasses.replace(catalog[pick][0], frequency_cap_use=float(cap_use))
                  for pick, cap_use in zip(picks, cap_uses, strict=True)]
        rows_of_request = slice(request * OFFERS_PER_REQUEST, (request + 1) * OFFERS_PER_REQUEST)
        matrix = build_matrix(user=user, context=context, offers=offers)
        features[rows_of_request] = matrix

        interest = matrix[:, column["match_interest_offer"]]
        context_match = matrix[:, column["match_context_offer"]]
        segment = matrix[:, column["match_segment_offer"]]
        quality = np.array([catalog[pick][1] for pick in picks])
        recency_lift = (0.0 if user.recency_hours is None
                        else math.exp(-user.recency_hours / 48))
        hour = context.hour_of_week if context.hour_of_week is not None else 0
        ctr_logits[rows_of_request] = [
            _logit(_BASE_CTR[offer.format])
            + _CTR_FORMAT_DEVICE[offer.format][device_group]
            + math.log1p(offer.bid_cpm) * 0.1
            for offer in offers
        ]
        ctr_logits[rows_of_request] += (
            quality + 1.0 * interest + 0.4 * context_match + 0.5 * segment
            - 1.2 * cap_uses + _CTR_TIER[tier]
            + 0.3 * math.cos(2 * math.pi * (hour % 24 - 20) / 24) + 0.1 * (hour >= 120)
            + 0.3 * recency_lift
            + {1: 0.3, 3: -0.2}.get(context.ad_position, 0.0) + 0.7 * context.is_interstitial
        )
        cvr_logits[rows_of_request] = (
            _logit(_BASE_CVR) + 0.5 * quality + 0.8 * interest + 0.6 * segment
            + _CVR_TIER[tier] + _CVR_DEVICE_GROUP[device_group] + 0.4 * recency_lift
        )
    clicked = rng.random(len(ctr_logits)) < _sigmoid(ctr_logits)
    converted = rng.random(len(cvr_logits)) < _sigmoid(cvr_logits)
    labels = np.stack([clicked, converted], axis=1).astype(np.float32)
    return Dataset(features=features[:rows], labels=labels[:rows],
                   cvr_weights=np.ones(rows, dtype=np.float32),
                   source=f"synthetic data (inference/train.py, seed {seed})")


def events_dataset(*, path: Path) -> Dataset:
    """Impressions exported as JSON lines (format in the module docstring)."""
    rows, labels = [], []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                offer = event["offer"]
                row = build_row(
                    user=UserFeatures(**_with_sets(event.get("user", {}),
                                                   ("interests", "segments"))),
                    offer=OfferFeatures(**_with_sets(offer, ("segments",))),
                    context=ContextFeatures(**event.get("context", {})))
            except (ValueError, KeyError, TypeError) as error:
                raise SystemExit(f"{path.name} line {number}: not an impression event: "
                                 f"{error}") from None
            rows.append(row)
            labels.append((bool(event.get("clicked")),
                           bool(event.get("clicked")) and bool(event.get("converted"))))
    if not rows:
        raise SystemExit(f"{path.name} holds no events")
    label_array = np.array(labels, dtype=np.float32)
    return Dataset(features=np.stack(rows), labels=label_array, cvr_weights=label_array[:, 0],
                   source=f"events ({path.name})")


def train_mlp(*, features: Array, labels: Array, cvr_weights: Array, seed: int) -> Mlp:
    """Mini-batch Adam on the summed binary cross-entropy of both outputs.

    The output biases start at the training rates' logits, so the first steps refine a
    constant-rate model instead of unlearning a 50% one.
    """
    rng = np.random.default_rng(seed)
    weights = np.stack([np.ones(len(labels), dtype=np.float32), cvr_weights], axis=1)
    rates = (labels * weights).sum(axis=0) / np.maximum(weights.sum(axis=0), 1)
    parameters = [
        (rng.standard_normal((FEATURE_COUNT, HIDDEN_UNITS)) * math.sqrt(2 / FEATURE_COUNT)),
        np.zeros(HIDDEN_UNITS),
        rng.standard_normal((HIDDEN_UNITS, len(OUTPUTS))) * math.sqrt(1 / HIDDEN_UNITS),
        _logit(np.clip(rates, 1e-4, 1 - 1e-4)),
    ]
    parameters = [parameter.astype(np.float32) for parameter in parameters]
    first_moments = [np.zeros_like(parameter) for parameter in parameters]
    second_moments = [np.zeros_like(parameter) for parameter in parameters]
    beta1, beta2, epsilon = 0.9, 0.999, 1e-8
    step = 0
    for _epoch in range(EPOCHS):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start:start + BATCH_SIZE]
            inputs = features[batch]
            hidden_weight, hidden_bias, output_weight, output_bias = parameters
            hidden = np.maximum(inputs @ hidden_weight + hidden_bias, 0)
            scores = _sigmoid(hidden @ output_weight + output_bias)
            output_gradient = (scores - labels[batch]) * weights[batch] / len(batch)
            hidden_gradient = (output_gradient @ output_weight.T) * (hidden > 0)
            gradients = [inputs.T @ hidden_gradient, hidden_gradient.sum(axis=0),
                         hidden.T @ output_gradient, output_gradient.sum(axis=0)]
            step += 1
            for index, gradient in enumerate(gradients):
                first_moments[index] = beta1 * first_moments[index] + (1 - beta1) * gradient
                second_moments[index] = (beta2 * second_moments[index]
                                         + (1 - beta2) * gradient * gradient)
                corrected_first = first_moments[index] / (1 - beta1 ** step)
                corrected_second = second_moments[index] / (1 - beta2 ** step)
                parameters[index] = (parameters[index] - LEARNING_RATE * corrected_first
                                     / (np.sqrt(corrected_second) + epsilon)).astype(np.float32)
    return Mlp(*parameters)


def evaluate(*, model: Mlp, dataset: Dataset, train_rows: int) -> dict[str, Any]:
    """Held-out log loss and AUC for each output, and the log loss of the training rate.

    A metric that cannot be computed (no held-out rows with a conversion label, one class
    only) is None.
    """
    held_out = slice(train_rows, None)
    scores = model.scores(dataset.features[held_out])
    metrics: dict[str, Any] = {"held_out_rows": len(scores)}
    for index, output in enumerate(OUTPUTS):
        weights = np.ones(len(dataset.labels)) if index == 0 else dataset.cvr_weights
        counted_train = weights[:train_rows] > 0
        counted = weights[held_out] > 0
        labels = dataset.labels[held_out][counted, index]
        train_labels = dataset.labels[:train_rows][counted_train, index]
        rate = float(train_labels.mean()) if len(train_labels) else math.nan
        metrics[output] = {
            "positives": int(labels.sum()),
            "rows": int(counted.sum()),
            "log_loss": _rounded(log_loss(labels=labels, scores=scores[counted, index])),
            "baseline_log_loss": _rounded(log_loss(labels=labels,
                                                   scores=np.full(len(labels), rate))),
            "auc": _rounded(auc(labels=labels, scores=scores[counted, index])),
        }
    return metrics


def log_loss(*, labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float:
    """Mean binary cross-entropy; NaN for no rows."""
    if len(labels) == 0:
        return math.nan
    clipped = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))


def auc(*, labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float:
    """Area under the ROC curve by the rank-sum formula, ties at their average rank.

    NaN when the labels hold only one class.
    """
    is_positive = labels > 0.5
    positives = int(is_positive.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return float((ranks[is_positive].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def golden_examples() -> list[tuple[UserFeatures, OfferFeatures, ContextFeatures]]:
    """Fixed users, offers and contexts whose scores every exported model records.

    They cover each format, several devices, tiers and unknown values, so a provider that
    mishandles any part of the input changes at least one golden output.
    """
    regular = UserFeatures(interests=frozenset({"IAB8", "IAB20-3"}),
                           segments=frozenset({"segment_1"}), loyalty_tier="gold",
                           loyalty_balance=3200.0, recency_hours=6.0)
    newcomer = UserFeatures()
    phone = ContextFeatures(device_type="phone", os="ios", hour_of_week=44,
                            site_category="IAB8-5", is_app=True, ad_position=1)
    desktop = ContextFeatures(device_type="desktop", os="windows", hour_of_week=14,
                              site_category="IAB12", ad_position=3)
    television = ContextFeatures(device_type="ctv", os="roku", hour_of_week=140,
                                 site_category="IAB1-6", is_app=True)
    messy = ContextFeatures(device_type="smartwatch", os="Symbian", hour_of_week=999,
                            site_category="IAB99-1", ad_position=42)
    coffee = OfferFeatures(format="banner", category="IAB8", bid_cpm=2.5, historical_ctr=0.004,
                           segments=frozenset({"segment_1"}))
    trailer = OfferFeatures(format="video", category="IAB1-6", bid_cpm=12.0,
                            historical_ctr=0.011, frequency_cap_use=0.5)
    travel = OfferFeatures(format="native", category="IAB20", bid_cpm=4.0)
    podcast = OfferFeatures(format="audio", category="IAB5", bid_cpm=1.0,
                            historical_ctr=0.002, frequency_cap_use=0.9)
    odd = OfferFeatures(format="hologram", category="", bid_cpm=-1.0, historical_ctr=2.0)
    return [
        (regular, coffee, phone),
        (regular, travel, phone),
        (regular, trailer, television),
        (newcomer, coffee, desktop),
        (newcomer, podcast, phone),
        (UserFeatures(loyalty_tier="reserve", loyalty_balance=50_000.0, recency_hours=500.0),
         travel, desktop),
        (newcomer, trailer, messy),
        (UserFeatures(loyalty_tier="platinum", recency_hours=-3.0), odd, messy),
    ]


def export_onnx(*, model: Mlp, version: str, description: str) -> bytes:
    """The model as ONNX bytes, carrying its identity and golden examples as metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes=[
            helper.make_node("Gemm", [INPUT_NAME, "hidden_weight", "hidden_bias"], ["hidden"]),
            helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
            helper.make_node("Gemm", ["hidden_relu", "output_weight", "output_bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
        ],
        name=MODEL_NAME,
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                              ["batch", FEATURE_COUNT])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                               ["batch", len(OUTPUTS)])],
        initializer=[numpy_helper.from_array(getattr(model, name), name)
                     for name in ("hidden_weight", "hidden_bias", "output_weight",
                                  "output_bias")],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="campaign-express")
    onnx_model.ir_version = IR_VERSION
    golden_inputs = np.stack([build_row(user=user, offer=offer, context=context)
                              for user, offer, context in golden_examples()])
    metadata = {NAME_KEY: MODEL_NAME, VERSION_KEY: version,
                SCHEMA_VERSION_KEY: str(SCHEMA_VERSION),
                GOLDEN_INPUTS_KEY: _json_matrix(golden_inputs), DESCRIPTION_KEY: description}
    helper.set_model_props(onnx_model, {**metadata, GOLDEN_OUTPUTS_KEY: "[]"})
    onnx.checker.check_model(onnx_model)
    golden_outputs = _run_onnxruntime(onnx_model.SerializeToString(), golden_inputs)
    helper.set_model_props(onnx_model, {**metadata,
                                        GOLDEN_OUTPUTS_KEY: _json_matrix(golden_outputs)})
    return bytes(onnx_model.SerializeToString())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.train",
                                     description="Train and export the offer-scoring model.")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"synthetic impressions to generate (default {DEFAULT_ROWS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed for data, initialisation and shuffling (default "
                             f"{DEFAULT_SEED})")
    parser.add_argument("--version", default=DEFAULT_VERSION,
                        help=f"model_version metadata (default {DEFAULT_VERSION})")
    parser.add_argument("--output", type=Path,
                        help="model file to write (default inference/assets/"
                             "offer-scoring-VERSION.onnx); the manifest goes beside it as .json")
    parser.add_argument("--events", type=Path,
                        help="train on exported impression events (JSON lines) instead of "
                             "synthetic data")
    arguments = parser.parse_args(argv)
    if arguments.events is None and arguments.rows < 100:
        parser.error("--rows must be at least 100")

    dataset = (events_dataset(path=arguments.events) if arguments.events is not None
               else synthetic_dataset(rows=arguments.rows, seed=arguments.seed))
    rows = len(dataset.labels)
    train_rows = rows - round(rows * HELD_OUT_SHARE)
    model = train_mlp(features=dataset.features[:train_rows],
                      labels=dataset.labels[:train_rows],
                      cvr_weights=dataset.cvr_weights[:train_rows], seed=arguments.seed)
    metrics = evaluate(model=model, dataset=dataset, train_rows=train_rows)
    print(f"trained on {train_rows} of {rows} rows from {dataset.source}; "
          f"held out {metrics['held_out_rows']}")
    for output in OUTPUTS:
        result = metrics[output]
        print(f"{output}: log loss {_shown(result['log_loss'], 5)} (constant rate "
              f"{_shown(result['baseline_log_loss'], 5)}), AUC {_shown(result['auc'], 4)}, "
              f"{result['positives']} positives in {result['rows']} rows")

    description = (f"{MODEL_NAME} {arguments.version}: MLP {FEATURE_COUNT} -> {HIDDEN_UNITS} "
                   f"ReLU -> {len(OUTPUTS)} sigmoid ({', '.join(OUTPUTS)}), feature schema "
                   f"{SCHEMA_VERSION}, trained on {rows} rows of {dataset.source}")
    data = export_onnx(model=model, version=arguments.version, description=description)
    model_path = arguments.output or ASSETS_DIR / f"{MODEL_NAME}-{arguments.version}.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(data)
    manifest = {
        "name": MODEL_NAME,
        "version": arguments.version,
        "file": model_path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "feature_schema_version": SCHEMA_VERSION,
        "trained_on": dataset.source,
        "rows": rows,
        "metrics": metrics,
    }
    model_path.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {model_path.name} ({len(data)} bytes, sha256 {manifest['sha256']}) and "
          f"{model_path.with_suffix('.json').name}")
    return 0


def _offer_catalog(rng: np.random.Generator) -> list[tuple[OfferFeatures, float]]:
    """Each catalog offer with its hidden quality (logit lift shared by CTR and CVR)."""
    formats = rng.choice(FORMATS, size=CATALOG_SIZE, p=[_FORMAT_SHARES[f] for f in FORMATS])
    catalog = []
    for offer_format in formats:
        quality = float(rng.normal(0, 0.4))
        base_rate = _sigmoid(np.array(_logit(_BASE_CTR[str(offer_format)]) + quality))
        catalog.append((OfferFeatures(
            format=str(offer_format),
            category=IAB_CATEGORIES[rng.integers(len(IAB_CATEGORIES))],
            bid_cpm=float(rng.lognormal(math.log(2.0), 0.6)),
            historical_ctr=(float(base_rate * rng.lognormal(0, 0.25))
                            if rng.random() < 0.75 else None),
            segments=(frozenset({SEGMENTS[rng.integers(len(SEGMENTS))]})
                      if rng.random() < 0.3 else frozenset()),
        ), quality))
    return catalog


def _random_user(rng: np.random.Generator) -> tuple[UserFeatures, int]:
    tiers = list(_TIER_SHARES)
    tier = int(rng.choice(len(tiers), p=list(_TIER_SHARES.values())))
    interests = rng.choice(len(IAB_CATEGORIES), size=rng.integers(1, 6), replace=False)
    user = UserFeatures(
        interests=frozenset(_category_text(rng, int(index)) for index in interests),
        segments=frozenset(str(segment) for segment in
                           rng.choice(SEGMENTS, size=rng.integers(0, 4), replace=False)),
        loyalty_tier=tiers[tier],
        loyalty_balance=(0.0 if tier == 0
                         else float(rng.lognormal(math.log(_TIER_MEDIAN_BALANCE[tier]), 1.0))),
        recency_hours=(None if rng.random() < 0.2
                       else float(rng.lognormal(math.log(24.0), 1.5))),
    )
    return user, tier


def _random_context(rng: np.random.Generator) -> tuple[ContextFeatures, int]:
    device = str(rng.choice(list(_DEVICE_SHARES), p=list(_DEVICE_SHARES.values())))
    group = _DEVICE_GROUPS[device]
    context = ContextFeatures(
        device_type=device,
        os=str(rng.choice(_OS_BY_GROUP[group])),
        hour_of_week=int(rng.integers(168)),
        site_category=("" if rng.random() < 0.05
                       else _category_text(rng, int(rng.integers(len(IAB_CATEGORIES))))),
        is_app=bool(rng.random() < _APP_SHARE_BY_GROUP[group]),
        is_interstitial=bool(rng.random() < 0.1),
        ad_position=int(rng.choice([0, 1, 3], p=[0.4, 0.35, 0.25])),
    )
    return context, group


def _category_text(rng: np.random.Generator, index: int) -> str:
    """A top-level category, 30% of the time written as one of its sub-categories."""
    top_level = IAB_CATEGORIES[index]
    return f"{top_level}-{rng.integers(1, 10)}" if rng.random() < 0.3 else top_level


def _with_sets(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {**fields, **{name: frozenset(fields[name]) for name in names if name in fields}}


def _rounded(value: float) -> float | None:
    """Six decimals for the manifest; None for NaN, which JSON cannot hold."""
    return None if math.isnan(value) else round(value, 6)


def _shown(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _logit(rate: Any) -> Any:
    return np.log(rate) - np.log1p(-rate)


def _sigmoid(logits: npt.NDArray[Any]) -> Array:
    rates: Array = (1 / (1 + np.exp(-logits))).astype(np.float32)
    return rates


def _json_matrix(matrix: npt.NDArray[np.float32]) -> str:
    """Float32 values as JSON numbers that read back to the same float32, bit for bit."""
    return json.dumps([[float(value) for value in row] for row in matrix.astype(np.float32)])


def _run_onnxruntime(data: bytes, inputs: Array) -> Array:
    from onnxruntime import InferenceSession  # type: ignore[import-untyped, unused-ignore]

    session = InferenceSession(data, providers=["CPUExecutionProvider"])
    scores: Array = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    return scores


if __name__ == "__main__":
    sys.exit(main())
