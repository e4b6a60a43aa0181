import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_express import env
from campaign_express.logs import parse_filter

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "CAMPAIGN_EXPRESS__MODE": "production",
    "CAMPAIGN_EXPRESS__SECRET_KEY": "s" * 50,
    "CAMPAIGN_EXPRESS__ALLOWED_HOSTS": "ce.example,api.ce.example",
    "DATABASE_URL": "postgres://ce@db:5432/ce",
    "REDIS_URL": "redis://redis:6379/0",
    "NATS_URL": "nats://nats:4222",
    "CLICKHOUSE_URL": "clickhouse://default@clickhouse:9000/ce",
    "CELERY_BROKER_URL": "redis://redis:6379/1",
}


def test_embedded_defaults_leave_backends_in_process(tmp_path):
    config = env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)})
    assert config.mode == "embedded"
    assert config.database_url == f"sqlite:///{tmp_path / 'campaign_express.sqlite3'}"
    assert (config.redis_url, config.nats_url, config.clickhouse_url,
            config.celery_broker_url) == ("", "", "", "")
    assert (config.http_port, config.grpc_port, config.metrics_port) == (8080, 9090, 9091)
    assert config.agents_per_node == 20
    assert config.loyalty_enabled is True and config.dsp_enabled is False
    assert config.npu_provider == "cpu"
    assert config.allowed_hosts == ("localhost", "127.0.0.1", "[::1]")


def test_embedded_secret_key_is_generated_once_per_data_dir(tmp_path):
    first = env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}).secret_key
    second = env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}).secret_key
    assert first == second and len(first) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_production_with_every_required_variable_loads(tmp_path):
    config = env.load({**PRODUCTION, "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)})
    assert config.is_production
    assert config.database_url == "postgres://ce@db:5432/ce"
    assert config.allowed_hosts == ("ce.example", "api.ce.example")


@pytest.mark.parametrize("missing", [v.name for v in env.VARIABLES if v.required_in_production])
def test_production_names_the_missing_required_variable(missing, tmp_path):
    environ = {**PRODUCTION, "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}
    del environ[missing]
    with pytest.raises(env.ConfigError, match=f"^{missing} is required"):
        env.load(environ)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CAMPAIGN_EXPRESS__API__HTTP_PORT", "eighty", "must be an integer"),
    ("CAMPAIGN_EXPRESS__API__HTTP_PORT", "70000", "must be between 0 and 65535"),
    ("CAMPAIGN_EXPRESS__DSP__ENABLED", "maybe", "must be true or false"),
    ("CAMPAIGN_EXPRESS__NPU__PROVIDER", "abacus", "must be one of cpu, cuda"),
    ("CAMPAIGN_EXPRESS__MODE", "staging", "must be one of embedded, production"),
    ("CAMPAIGN_EXPRESS__LOG_FORMAT", "xml", "must be one of text, json"),
    ("CAMPAIGN_EXPRESS__NATS__REPLICAS", "0", "must be between 1 and 5"),
    ("CAMPAIGN_EXPRESS__NATS__REPLICAS", "6", "must be between 1 and 5"),
    ("CAMPAIGN_EXPRESS__NATS__REPLICAS", "three", "must be an integer"),
    ("CAMPAIGN_EXPRESS__CHANNELS__REDIS_URL", "redis-broker:6379", "must be a redis or rediss URL"),
])
def test_malformed_values_name_the_variable(name, value, message, tmp_path):
    with pytest.raises(env.ConfigError, match=f"^{name} {message}"):
        env.load({name: value, "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)})


def test_nats_replicas_default_to_one(tmp_path):
    assert env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}).nats_replicas == 1
    assert env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path),
                     "CAMPAIGN_EXPRESS__NATS__REPLICAS": "3"}).nats_replicas == 3


def test_channel_layer_redis_defaults_to_redis_url(tmp_path):
    base = {"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}
    assert env.load(base).channels_redis_url == ""
    with_redis = {**base, "REDIS_URL": "redis://redis:6379/0"}
    assert env.load(with_redis).channels_redis_url == "redis://redis:6379/0"
    assert env.load({**with_redis, "CAMPAIGN_EXPRESS__CHANNELS__REDIS_URL": ""}
                    ).channels_redis_url == "redis://redis:6379/0"
    assert env.load({**with_redis,
                     "CAMPAIGN_EXPRESS__CHANNELS__REDIS_URL": "redis://redis-broker:6379/2"}
                    ).channels_redis_url == "redis://redis-broker:6379/2"


def test_xdna_device_implies_xdna_provider_unless_provider_is_set(tmp_path):
    base = {"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path), "CAMPAIGN_EXPRESS__NPU__DEVICE": "xdna"}
    assert env.load(base).npu_provider == "xdna"
    assert env.load({**base, "CAMPAIGN_EXPRESS__NPU__PROVIDER": "cpu"}).npu_provider == "cpu"


def test_every_variable_is_documented_in_env_example_and_docs():
    example = (ROOT / ".env.example").read_text()
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for variable in env.VARIABLES:
        assert f"\n{variable.name}=" in example, variable.name
        assert f"`{variable.name}`" in docs, variable.name


def test_configuration_docs_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("config_docs",
                                                  ROOT / "scripts" / "config_docs.py")
    config_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_docs)
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert (ROOT / ".env.example").read_text() == config_docs.env_example(), (
        "run scripts/config_docs.py")
    assert docs == config_docs.configuration_doc(docs), "run scripts/config_docs.py"


def test_log_filter_parses_default_and_per_logger_levels():
    assert parse_filter("warn,campaigns=debug,django.db=error") == (
        "warning", {"campaigns": "debug", "django.db": "error"})
    with pytest.raises(env.ConfigError, match="unknown level 'loud'"):
        parse_filter("campaigns=loud")


def test_manage_py_in_production_mode_stops_naming_the_missing_variable(tmp_path):
    environ = {key: value for key, value in os.environ.items()
               if key not in PRODUCTION and not key.startswith("CAMPAIGN_EXPRESS__")}
    environ.update({**PRODUCTION, "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)})
    del environ["NATS_URL"]
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environ,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == ("configuration error: NATS_URL is required when "
                                     "CAMPAIGN_EXPRESS__MODE=production; see .env.example")


def test_the_channel_layer_uses_the_channels_redis_url(tmp_path):
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("CAMPAIGN_EXPRESS__") and key != "REDIS_URL"}
    environ.update({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path),
                    "DJANGO_SETTINGS_MODULE": "campaign_express.settings.base"})
    script = "from django.conf import settings; print(settings.CHANNEL_LAYERS['default'])"

    def layer(**variables):
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                text=True, env={**environ, **variables}, check=True)
        return result.stdout.strip()

    assert layer() == "{'BACKEND': 'channels.layers.InMemoryChannelLayer'}"
    assert layer(REDIS_URL="redis://redis:6379/0") == (
        "{'BACKEND': 'channels_redis.core.RedisChannelLayer', "
        "'CONFIG': {'hosts': ['redis://redis:6379/0']}}")
    assert layer(REDIS_URL="redis://redis:6379/0",
                 CAMPAIGN_EXPRESS__CHANNELS__REDIS_URL="redis://redis-broker:6379/2") == (
        "{'BACKEND': 'channels_redis.core.RedisChannelLayer', "
        "'CONFIG': {'hosts': ['redis://redis-broker:6379/2']}}")
