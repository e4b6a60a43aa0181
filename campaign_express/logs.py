"""Logging set-up from a RUST_LOG-style filter: ``info,campaigns=debug,django.db=warning``."""

from __future__ import annotations

import json
import logging
from typing import Any

from campaign_express.env import ConfigError

LEVELS = ("debug", "info", "warning", "error", "critical")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": "campaign_express.logs.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt}},
        "root": {"handlers": ["console"], "level": default.upper()},
        "loggers": {name: {"level": level.upper()} for name, level in loggers.items()},
    }
