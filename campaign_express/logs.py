"""Logging set-up from a RUST_LOG-style filter: ``info,campaigns=debug,django.db=warning``.

Lines logged while a request is handled carry its id (and, when tracing is on, the trace and
span ids): the request's transport sets `REQUEST` to a `RequestContext` once per request, and
`RequestContextFilter` copies it onto each record. Nothing is computed for a request that logs
nothing: a context may work its id out only when a line asks for it (`bidding.app`).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from typing import Any

from campaign_express.env import ConfigError

LEVELS = ("debug", "info", "warning", "error", "critical")
REQUEST_ID_HEADER = "X-Request-ID"


class RequestContext:
    """The request being handled: its id, and its span when tracing is on (else None)."""

    __slots__ = ("_request_id", "span")

    def __init__(self, request_id: str = "", span: Any = None) -> None:
        self._request_id = request_id
        self.span = span

    @property
    def request_id(self) -> str:
        return self._request_id


REQUEST: ContextVar[RequestContext | None] = ContextVar("request", default=None)


class RequestContextFilter(logging.Filter):
    """Sets `request_id`, `trace_id` and `span_id` on every record ('' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = REQUEST.get()
        record.request_id = record.trace_id = record.span_id = ""
        if context is not None:
            record.request_id = context.request_id
            if context.span is not None:
                span_context = context.span.get_span_context()
                record.trace_id = format(span_context.trace_id, "032x")
                record.span_id = format(span_context.span_id, "016x")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors; request fields only when there are some."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("request_id", "trace_id", "span_id"):
            if value := getattr(record, field, ""):
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request id]``, for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", "")
        return f"{line} [{request_id}]" if request_id else line


def parse_filter(spec: str) -> tuple[str, dict[str, str]]:
    default, loggers = "info", {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, level = part.rpartition("=")
        level = {"warn": "warning", "trace": "debug"}.get(level.lower(), level.lower())
        if level not in LEVELS:
            raise ConfigError(f"CAMPAIGN_EXPRESS__LOG: unknown level {level!r} in {part!r}")
        if name:
            loggers[name] = level
        else:
            default = level
    return default, loggers


def logging_config(spec: str, fmt: str) -> dict[str, Any]:
    default, loggers = parse_filter(spec)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": "campaign_express.logs.RequestContextFilter"}},
        "formatters": {
            "text": {"()": "campaign_express.logs.TextFormatter"},
            "json": {"()": "campaign_express.logs.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt,
                                 "filters": ["request"]}},
        "root": {"handlers": ["console"], "level": default.upper()},
        "loggers": {name: {"level": level.upper()} for name, level in loggers.items()},
    }
