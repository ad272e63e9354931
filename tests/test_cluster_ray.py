"""The Ray backend on a real Ray cluster on this machine (``ray.cluster_utils.Cluster``, every process on
127.0.0.1): a head with no GPU and two nodes with different inventories (node A one A100, node B one A100
and one T4, given through ``COGPORT_GPUS`` in each node's environment). A real cogport server joins it with
``COGPORT_BACKEND=ray``; real coglet instances run under the node supervisors.

The cluster runs with Ray's token authentication, as docs/cluster.md asks: ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH`` (a token file of the module's) in the environment of the head, the nodes and this
process (the driver)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray  # the cluster extra is part of the test environment: missing, this fails (never skips)
from ray.cluster_utils import Cluster

from cogport.backends.raycluster import RayBackend, ray_auth_problem
from cogport.errors import BackendUnavailable
from cogport.runtime.sandbox import safe_base_environment
from cogport.settings import RaySettings, Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import predictions
from tests.support.models import push_fixture
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.ray import stop_supervisors, token_auth
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed, seaweed  # noqa: F401 - the fixture

pytestmark = [pytest.mark.xdist_group("ray-cluster")]
AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
A100 = "NVIDIA A100-SXM4-80GB"
T4 = "Tesla T4"


class RayCluster:
    def __init__(self, token: Path) -> None:
        self.token = token
        common: dict[str, Any] = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
        # the bucket's credentials come from each node's own environment, as on real machines
        keys = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={**common, "include_dashboard": False, "env_vars": {"COGPORT_GPUS": "[]", **keys}},
        )
        gpus_a = json.dumps([{"index": 0, "name": A100}])
        gpus_b = json.dumps([{"index": 0, "name": A100}, {"index": 1, "name": T4}])
        self.a = self.cluster.add_node(**common, env_vars={"COGPORT_GPUS": gpus_a, **keys})
        self.b = self.cluster.add_node(**common, env_vars={"COGPORT_GPUS": gpus_b, **keys})
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def short(self, node: Any) -> str:
        return str(node.node_id)[:8]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """The cluster, with token authentication (:func:`tests.support.ray.token_auth`)."""
    with token_auth(tmp_path_factory.mktemp("ray-auth")) as token:
        made = RayCluster(token)
        try:
            yield made
        finally:
            ray.shutdown()
            made.cluster.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture
def settings(settings: Settings, cluster: RayCluster, seaweed: Seaweed) -> Iterator[Settings]:  # noqa: F811
    """The Ray backend, and S3 storage: nodes prepare versions from bundles in the bucket."""
    namespace = f"cogport-test-{time.monotonic_ns()}"  # supervisors of this test only (its sandbox binds)
    settings.storage = seaweed.storage_settings()
    settings.backend = "ray"
    settings.ray.address = cluster.address
    settings.ray.namespace = namespace
    settings.runtime.idle_timeout = 2.0
    settings.runtime.max_instances_per_version = 1
    yield settings
    stop_supervisors(namespace)


def until(check: Callable[[], Any], within: float = 90.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("not within the time")


def nodes_of(server: LiveServer) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/admin/v1/instances", headers=AUTH)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def skus_of(server: LiveServer) -> set[str]:
    return {item["sku"] for item in httpx.get(f"{server.url}/v1/hardware", headers=AUTH).json()}


# --- token authentication (no cluster) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "home_token", "problem"),
    [
        ({}, None, "RAY_AUTH_MODE is not set"),
        ({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "t" * 32}, None, "RAY_AUTH_MODE is 'disabled'"),
        ({"RAY_AUTH_MODE": "token"}, None, "RAY_AUTH_TOKEN and RAY_AUTH_TOKEN_PATH are not set"),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "{tmp}/missing"}, None, "RAY_AUTH_TOKEN_PATH="),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "{tmp}/empty"}, None, "cannot be read or is empty"),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t" * 32}, None, None),
        ({"RAY_AUTH_MODE": "TOKEN", "RAY_AUTH_TOKEN_PATH": "{tmp}/token"}, None, None),
        ({"RAY_AUTH_MODE": "token"}, "t" * 32, None),  # Ray's default file, ~/.ray/auth_token
        ({"RAY_AUTH_MODE": "token"}, "\n", "auth_token cannot be read or is empty"),
    ],
)
def test_token_auth_is_read_as_ray_reads_it(
    tmp_path: Path, environ: dict[str, str], home_token: str | None, problem: str | None
) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "token").write_text("t" * 32 + "\n")
    if home_token is not None:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text(home_token)
    found = ray_auth_problem({k: v.format(tmp=tmp_path) for k, v in environ.items()}, home=tmp_path)
    if problem is None:
        assert found is None, found
    else:
        assert found is not None and problem in found, found


def ray_settings(tmp_path: Path, **ray: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        detect_gpus=False,
        register_examples=False,
        backend="ray",
        ray=RaySettings(address="127.0.0.1:1", **ray),  # nothing listens: a refusal comes before connecting
    )


async def test_the_backend_refuses_to_start_without_token_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(BackendUnavailable) as refused:
        await RayBackend(ray_settings(tmp_path)).start()
    message = str(refused.value)
    assert "RAY_AUTH_MODE is not set" in message
    assert "RAY_AUTH_MODE=token" in message and "RAY_AUTH_TOKEN_PATH" in message
    assert "COGPORT_RAY__ALLOW_UNAUTHENTICATED" in message
    # a token file named but empty: refused too, naming the file
    (tmp_path / "token").write_text("")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(BackendUnavailable, match=r"RAY_AUTH_TOKEN_PATH=.*cannot be read or is empty"):
        await RayBackend(ray_settings(tmp_path)).start()


def test_models_get_none_of_rays_environment() -> None:
    """A node's Ray token (and address) stay out of models: the sandbox passes only what it computes."""
    node = {"PATH": "/usr/bin", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "secret", "RAY_ADDRESS": "10.0.0.1:6379"}
    node["RAY_AUTH_TOKEN_PATH"] = "/etc/cogport/ray-token"
    assert safe_base_environment(node) == {"PATH": "/usr/bin"}


# --- token authentication on the cluster -----------------------------------------------------------


def test_a_client_without_the_token_is_refused(cluster: RayCluster, tmp_path: Path) -> None:
    """What model code on a node could try: join the cluster as a driver (and then run anything). Without
    the token, or with a wrong one, the GCS refuses it; with the token it joins. (The test cluster runs no
    dashboard, Ray core has none; with one, its Jobs API answers 401/403 the same way.)"""
    code = f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False); print('joined', len(ray.nodes()))"
    base = {k: v for k, v in os.environ.items() if k not in AUTH_VARIABLES}
    base |= {"HOME": str(tmp_path), "RAY_gcs_server_port_wait_time_s": "1"}  # one try, not twenty
    clients = {
        "none": base,
        "wrong": base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
        "token": base | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token)},
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, env in clients.items()
    }
    results = {name: (process.communicate(timeout=120), process.returncode) for name, process in running.items()}
    for name in ("none", "wrong"):
        (out, err), code_ = results[name]
        assert code_ != 0 and "joined" not in out, (name, out, err[-2000:])
        assert "InvalidAuthToken" in err or "AuthenticationError" in err, (name, err[-2000:])
    (out, err), code_ = results["token"]
    assert code_ == 0 and "joined" in out, (out, err[-2000:])


async def test_allow_unauthenticated_starts_with_a_warning(
    settings: Settings, cluster: RayCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """COGPORT_RAY__ALLOW_UNAUTHENTICATED: no RAY_AUTH_* in the environment, the backend starts anyway (this
    process is already joined, with the token: the check reads the environment) and says what it risks."""
    if not ray.is_initialized():
        await asyncio.to_thread(ray.init, address=cluster.address, log_to_driver=False, configure_logging=False)
    for name in AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(settings.data_dir))
    settings.ray.allow_unauthenticated = True
    backend = RayBackend(settings)
    with caplog.at_level(logging.WARNING, logger="cogport.backends.raycluster"):
        await backend.start()
    try:
        assert backend._nodes and all(node.state is not None for node in backend._nodes.values())
    finally:
        await backend.stop()
    (warning,) = [r for r in caplog.records if "ALLOW_UNAUTHENTICATED" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert "without token authentication" in warning.getMessage()
    assert "model code on a node" in warning.getMessage() and "can run code on every node" in warning.getMessage()


# --- the cluster at work ---------------------------------------------------------------------------


@pytest.mark.usefixtures("shared_build_dirs")
def test_hardware_is_the_union_of_the_nodes(live_server: LiveServer) -> None:
    skus = until(lambda: (found := skus_of(live_server)) >= {"cpu", "gpu-a100-large", "gpu-t4"} and found, 60)
    assert "gpu-a100-large-2x" not in skus  # no node has two


@pytest.mark.usefixtures("shared_build_dirs")
def test_work_spreads_over_the_nodes(live_server: LiveServer, tmp_path: Path, cluster: RayCluster) -> None:
    """One instance per version per node: three slow predictions at once run on three nodes."""
    version = push_fixture(live_server, tmp_path, "slow")
    with ThreadPoolExecutor(3) as pool:
        created = list(pool.map(lambda _: predictions.create(live_server, version, {"seconds": 8}), range(3)))
    # at least two nodes run them at once (idle instances stop after 2 s, so look while they are busy)
    until(lambda: len({i["node"] for i in nodes_of(live_server) if i["state"] == "busy"}) >= 2)
    for body in created:
        done = predictions.wait_for(live_server, body["id"], {"succeeded", "failed", "canceled"}, timeout=120)
        assert done["status"] == "succeeded", done
        assert done["output"] == "awake" and "sleeping" in done["logs"]


@pytest.mark.usefixtures("shared_build_dirs")
def test_a_deployment_spreads_over_the_nodes_that_have_its_gpus(
    live_server: LiveServer, tmp_path: Path, cluster: RayCluster
) -> None:
    """min_instances 2 on gpu-a100-large: node A and node B have one A100 each, so one instance on each,
    each given its node's GPU 0; a T4 deployment lands on node B, the only one with a T4 (GPU 1)."""
    version = push_fixture(live_server, tmp_path, "gpu_env")
    for name, sku, minimum in (("pair", "gpu-a100-large", 2), ("t4", "gpu-t4", 1)):
        body: dict[str, Any] = {"name": name, "model": "admin/gpu-env", "version": version, "hardware": sku}
        body |= {"min_instances": minimum, "max_instances": minimum}
        response = httpx.post(f"{live_server.url}/v1/deployments", json=body, headers=AUTH)
        assert response.status_code == 200, response.text

    def placed(name: str, count: int) -> list[dict[str, Any]] | None:
        response = httpx.get(f"{live_server.url}/v1/deployments/admin/{name}/instances", headers=AUTH)
        ready = [i for i in response.json()["results"] if i["state"] == "idle"]
        return ready if len(ready) >= count else None

    pair = until(lambda: placed("pair", 2))
    assert {i["node"].rsplit("/", 1)[1] for i in pair} == {cluster.short(cluster.a), cluster.short(cluster.b)}
    assert all(i["hardware"] == "gpu-a100-large" and i["gpus"] == [0] for i in pair), pair
    (t4,) = until(lambda: placed("t4", 1))
    assert t4["node"].endswith(cluster.short(cluster.b)) and t4["gpus"] == [1], t4
    response = httpx.post(
        f"{live_server.url}/v1/deployments/admin/t4/predictions",
        json={"input": {}},
        headers={**AUTH, "Prefer": "wait=60"},
    )
    assert response.status_code in (200, 201), response.text
    done = predictions.wait_for(live_server, response.json()["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded" and done["output"] == "1", done
    for name in ("pair", "t4"):
        httpx.patch(
            f"{live_server.url}/v1/deployments/admin/{name}",
            json={"min_instances": 0, "max_instances": 1},
            headers=AUTH,
        )


@pytest.mark.usefixtures("shared_build_dirs")
def test_a_lost_node_fails_what_it_ran_and_the_others_carry_on(
    live_server: LiveServer, tmp_path: Path, cluster: RayCluster
) -> None:
    """Node B is killed (its raylet and workers, no grace) while it runs a prediction: that prediction ends
    failed with a clear error within a minute; the T4 SKU leaves /v1/hardware; CPU work still runs."""
    version = push_fixture(live_server, tmp_path, "slow")
    body: dict[str, Any] = {"name": "onb", "model": "admin/slow", "version": version, "hardware": "gpu-t4"}
    body |= {"min_instances": 0, "max_instances": 1}
    assert httpx.post(f"{live_server.url}/v1/deployments", json=body, headers=AUTH).status_code == 200
    response = httpx.post(
        f"{live_server.url}/v1/deployments/admin/onb/predictions", json={"input": {"seconds": 120}}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    running = predictions.wait_for(live_server, response.json()["id"], {"processing"}, timeout=120)
    cluster.cluster.remove_node(cluster.b, allow_graceful=False)
    lost_at = time.monotonic()
    done = predictions.wait_for(live_server, running["id"], {"succeeded", "failed", "canceled"}, timeout=90)
    assert done["status"] == "failed" and "node" in done["error"] and "lost" in done["error"], done
    assert time.monotonic() - lost_at < 60
    until(lambda: "gpu-t4" not in skus_of(live_server))
    assert "cpu" in skus_of(live_server)
    after = predictions.create(live_server, version, {"seconds": 0.1}, headers={"Prefer": "wait=60"})
    after = predictions.wait_for(live_server, after["id"], {"succeeded", "failed", "canceled"}, timeout=120)
    assert after["status"] == "succeeded", after
    assert not (live_server.settings.data_dir / "files").exists() or not any(
        path.is_file() for path in (live_server.settings.data_dir / "files").rglob("*")
    )  # bundles, outputs: all in the bucket
