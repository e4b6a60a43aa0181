"""Inference metrics, named as the dashboards and alerts query them.

Latencies are in microseconds. Labels stay low-cardinality: provider names and model
versions, never request data.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_US = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
                      100_000)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)

INFERENCE_LATENCY_US = Histogram(
    "npu_inference_latency_us", "Time one batch spends in the provider, in microseconds.",
    ["provider"], buckets=LATENCY_BUCKETS_US)
BATCH_SIZE = Histogram("npu_batch_size", "Rows in each batch sent to the provider.",
                       ["provider"], buckets=BATCH_BUCKETS)
INFERENCE_ERRORS = Counter("npu_inference_errors_total",
                           "Batches the provider failed to score.", ["provider", "version"])
ACTIVE_MODEL = Gauge("npu_model_info",
                     "1 for each model version a process serves, by role (active, canary).",
                     ["name", "version", "role"])
MODEL_LOAD_FAILURES = Counter("npu_model_load_failures_total",
                              "Model versions refused at load: bad file, sha256, schema, "
                              "golden inputs or provider error.", ["name", "reason"])
PROVIDER_FALLBACKS = Counter("npu_provider_fallbacks_total",
                             "Start-ups that fell back to the cpu provider because the "
                             "configured one was unavailable.", ["requested"])
