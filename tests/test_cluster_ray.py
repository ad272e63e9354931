"""The Ray backend on a real Ray cluster on this machine (``ray.cluster_utils.Cluster``, every process on
127.0.0.1): a head with no GPU and two nodes with different inventories (node A one A100, node B one A100
and one T4, given through ``COGPORT_GPUS`` in each node's environment). A real cogport server joins it with
``COGPORT_BACKEND=ray``; real coglet instances run under the node supervisors."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray  # the cluster extra is part of the test environment: missing, this fails (never skips)
from ray.cluster_utils import Cluster

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import predictions
from tests.support.models import push_fixture
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed, seaweed  # noqa: F401 - the fixture

pytestmark = [pytest.mark.usefixtures("shared_build_dirs"), pytest.mark.xdist_group("ray-cluster")]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
A100 = "NVIDIA A100-SXM4-80GB"
T4 = "Tesla T4"


class RayCluster:
    def __init__(self) -> None:
        common = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
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
def cluster() -> Iterator[RayCluster]:
    made = RayCluster()
    try:
        yield made
    finally:
        ray.shutdown()
        made.cluster.shutdown()


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
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            handle = ray.get_actor(actor["name"], namespace=namespace)
            with contextlib.suppress(ray.exceptions.RayError):  # its node may be gone
                ray.get(handle.shutdown.remote(), timeout=30)
            ray.kill(handle)


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


def test_hardware_is_the_union_of_the_nodes(live_server: LiveServer) -> None:
    skus = until(lambda: (found := skus_of(live_server)) >= {"cpu", "gpu-a100-large", "gpu-t4"} and found, 60)
    assert "gpu-a100-large-2x" not in skus  # no node has two


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


def test_a_deployment_spreads_over_the_nodes_that_have_its_gpus(
    live_server: LiveServer, tmp_path: Path, cluster: RayCluster
) -> None:
    """min_instances 2 on gpu-a100-large: node A and node B have one A100 each, so one instance on each,
    each given its node's GPU 0; a T4 deployment lands on node B, the only one with a T4 (GPU 1)."""
    version = push_fixture(live_server, tmp_path, "gpu_env")
    for name, sku, minimum in (("pair", "gpu-a100-large", 2), ("t4", "gpu-t4", 1)):
        body = {"name": name, "model": "admin/gpu-env", "version": version, "hardware": sku}
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


def test_a_lost_node_fails_what_it_ran_and_the_others_carry_on(
    live_server: LiveServer, tmp_path: Path, cluster: RayCluster
) -> None:
    """Node B is killed (its raylet and workers, no grace) while it runs a prediction: that prediction ends
    failed with a clear error within a minute; the T4 SKU leaves /v1/hardware; CPU work still runs."""
    version = push_fixture(live_server, tmp_path, "slow")
    body = {"name": "onb", "model": "admin/slow", "version": version, "hardware": "gpu-t4"}
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
