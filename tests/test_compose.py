"""docker-compose.yml cannot run here (no Docker engine); its consistency is checked instead."""
from __future__ import annotations

import yaml

from .conftest import ROOT


def load():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_shared_volume():
    compose = load()
    services = compose["services"]
    assert {"redis", "web", "flower", "gpu0", "gpu1"} <= set(services)
    for name in ("web", "flower", "gpu0", "gpu1"):
        service = services[name]
        assert "data:/data" in service["volumes"], name
        assert service["environment"]["REDIS_URL"] == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0", name
        assert service["environment"]["CHATTERBOX_DATA_DIR"] == "/data", name
        assert "redis" in service["depends_on"], name
        assert service["command"][0] == "chatterbox", name
    assert set(compose["volumes"]) >= {"data", "redis"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly" in redis_command and "requirepass" in redis_command and "redis-server /tmp/redis.conf" in redis_command
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"


def test_one_worker_per_gpu_each_reserving_its_device():
    services = load()["services"]
    gpus = sorted(name for name in services if name.startswith("gpu"))
    reserved = []
    for name in gpus:
        command = services[name]["command"]
        assert command[1] == "worker" and command[command.index("--name") + 1] == name
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        reserved += devices[0]["device_ids"]
        assert devices[0]["device_ids"] == [name.removeprefix("gpu")]
    assert len(reserved) == len(set(reserved)) == len(gpus) >= 2


def test_ports_bound_to_loopback_and_flower_password_required():
    services = load()["services"]
    assert services["web"]["ports"] == ["127.0.0.1:5000:5000"]
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert "FLOWER_PASSWORD:?" in services["flower"]["environment"]["CHATTERBOX_FLOWER_PASSWORD"]


def test_commands_exist_in_the_cli():
    from click.testing import CliRunner

    from chatterbox.cli import main

    for name, service in load()["services"].items():
        if service["command"][0] == "chatterbox":
            result = CliRunner().invoke(main, [*service["command"][1:2], "--help"])
            assert result.exit_code == 0, (name, result.output)
