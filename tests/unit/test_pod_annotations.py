"""A worker's own pod annotations (deletion cost, do-not-disrupt) through the real Kubernetes client.

There is no API server here: the one call the module makes, PATCH of a pod, is answered by a thin fake
of the API server's pod endpoint under the real `kubernetes.client.CoreV1Api`, which applies the patch
to a stored pod the way the server would (a null removes an annotation)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client import rest

from bert_eval.temporal.pod_annotations import (
    CLUSTER_AUTOSCALER_SAFE_TO_EVICT,
    DELETION_COST,
    KARPENTER_DO_NOT_DISRUPT,
    AttemptsInterceptor,
    PodAnnotationSettings,
    PodAnnotator,
    desired_annotations,
)

NAMESPACE = "bert-eval"


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            target[key] = _merge(dict(target.get(key) or {}), value)
        else:
            target[key] = value
    return target


class FakePodEndpoint:
    """The API server's /api/v1/namespaces/{ns}/pods/{name} for PATCH, in memory."""

    def __init__(self, *pod_names: str) -> None:
        self.pods = {
            name: {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}}
            for name in pod_names
        }
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, body: Any = None, **_: Any
    ) -> rest.RESTResponse:
        self.requests.append(
            {"method": method, "url": url, "content_type": (headers or {}).get("Content-Type"), "body": body}
        )
        prefix = f"/api/v1/namespaces/{NAMESPACE}/pods/"
        path = url.split("://", 1)[-1].split("/", 1)[-1]
        name = ("/" + path).removeprefix(prefix).split("?")[0]
        if self.fail_next:
            self.fail_next -= 1
            return self._response(503, {"kind": "Status", "message": "unavailable"})
        if method != "PATCH" or name not in self.pods:
            return self._response(404, {"kind": "Status", "message": "not found"})
        assert "merge-patch" in (headers or {}).get("Content-Type", ""), headers
        _merge(self.pods[name], json.loads(body) if isinstance(body, str | bytes) else body)
        return self._response(200, self.pods[name])

    @staticmethod
    def _response(status: int, payload: dict[str, Any]) -> rest.RESTResponse:
        raw = SimpleNamespace(
            status=status, reason="", data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
        )
        return rest.RESTResponse(raw)

    def annotations(self, name: str) -> dict[str, str]:
        return dict(self.pods[name]["metadata"].get("annotations") or {})


@pytest.fixture
def endpoint() -> FakePodEndpoint:
    return FakePodEndpoint("trainer-a", "trainer-b")


@pytest.fixture
def api(endpoint: FakePodEndpoint) -> k8s.CoreV1Api:
    api_client = k8s.ApiClient(k8s.Configuration(host="https://kubernetes.default.svc"))
    api_client.rest_client.request = endpoint.request  # type: ignore[method-assign]
    return k8s.CoreV1Api(api_client)


def test_idle_pods_cost_nothing_and_carry_no_do_not_disrupt_mark() -> None:
    assert desired_annotations(0, deletion_cost=True, do_not_disrupt=True) == {
        DELETION_COST: "0",
        KARPENTER_DO_NOT_DISRUPT: None,
        CLUSTER_AUTOSCALER_SAFE_TO_EVICT: None,
    }
    assert desired_annotations(2, deletion_cost=True, do_not_disrupt=False) == {DELETION_COST: "2"}
    with pytest.raises(ValueError, match="attempts running"):
        desired_annotations(-1, deletion_cost=True, do_not_disrupt=False)


def test_a_busy_training_pod_is_marked_and_unmarked_through_the_kubernetes_client(
    api: k8s.CoreV1Api, endpoint: FakePodEndpoint
) -> None:
    counts: list[int] = []
    annotator = PodAnnotator(
        api, pod="trainer-a", namespace=NAMESPACE, deletion_cost=True, do_not_disrupt=True, on_count=counts.append
    )

    async def scenario() -> list[dict[str, str]]:
        seen = []
        await annotator.reset()
        seen.append(endpoint.annotations("trainer-a"))
        await annotator.attempt_started()
        seen.append(endpoint.annotations("trainer-a"))
        await annotator.attempt_finished()
        seen.append(endpoint.annotations("trainer-a"))
        return seen

    idle, busy, idle_again = asyncio.run(scenario())
    assert idle == {DELETION_COST: "0"}
    assert busy == {DELETION_COST: "1", KARPENTER_DO_NOT_DISRUPT: "true", CLUSTER_AUTOSCALER_SAFE_TO_EVICT: "false"}
    assert idle_again == {DELETION_COST: "0"}
    assert counts == [0, 1, 0]
    # Only its own pod, only by PATCH.
    assert {r["method"] for r in endpoint.requests} == {"PATCH"}
    assert all(r["url"].endswith(f"/api/v1/namespaces/{NAMESPACE}/pods/trainer-a") for r in endpoint.requests)
    assert endpoint.annotations("trainer-b") == {}


def test_scale_down_order_follows_the_costs_the_workers_set(api: k8s.CoreV1Api, endpoint: FakePodEndpoint) -> None:
    busy = PodAnnotator(api, pod="trainer-a", namespace=NAMESPACE)
    idle = PodAnnotator(api, pod="trainer-b", namespace=NAMESPACE)

    async def scenario() -> None:
        await busy.reset()
        await idle.reset()
        await busy.attempt_started()

    asyncio.run(scenario())
    costs = {name: int(endpoint.annotations(name)[DELETION_COST]) for name in endpoint.pods}
    # A ReplicaSet removes the lowest-cost pod first: the idle one.
    assert min(costs, key=costs.__getitem__) == "trainer-b" and costs["trainer-a"] > costs["trainer-b"]


def test_unchanged_annotations_are_not_patched_again(api: k8s.CoreV1Api, endpoint: FakePodEndpoint) -> None:
    annotator = PodAnnotator(api, pod="trainer-a", namespace=NAMESPACE, deletion_cost=False, do_not_disrupt=True)

    async def scenario() -> None:
        await annotator.reset()  # idle: removes the marks
        await annotator.attempt_started()  # busy: marks
        await annotator.attempt_started()  # still busy: same marks, no request
        await annotator.attempt_finished()  # still busy
        await annotator.attempt_finished()  # idle: removes the marks

    asyncio.run(scenario())
    assert len(endpoint.requests) == 3
    assert endpoint.annotations("trainer-a") == {}


def test_a_failed_patch_does_not_fail_the_attempt_and_is_retried_on_the_next_change(
    api: k8s.CoreV1Api, endpoint: FakePodEndpoint
) -> None:
    annotator = PodAnnotator(api, pod="trainer-a", namespace=NAMESPACE)
    endpoint.fail_next = 1

    async def scenario() -> None:
        await annotator.attempt_started()  # the API server answers 503: logged, not raised
        await annotator.attempt_started()

    asyncio.run(scenario())
    assert annotator.running == 2
    assert endpoint.annotations("trainer-a") == {DELETION_COST: "2"}


def test_the_interceptor_counts_an_attempt_until_it_ends_even_when_it_fails(
    api: k8s.CoreV1Api, endpoint: FakePodEndpoint
) -> None:
    annotator = PodAnnotator(api, pod="trainer-a", namespace=NAMESPACE, do_not_disrupt=True)
    during: list[dict[str, str]] = []

    class Next:
        async def execute_activity(self, input: Any) -> Any:
            during.append(endpoint.annotations("trainer-a"))
            raise RuntimeError("out of memory")

    inbound = AttemptsInterceptor(annotator).intercept_activity(Next())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="out of memory"):
        asyncio.run(inbound.execute_activity(None))  # type: ignore[arg-type]
    assert during == [{DELETION_COST: "1", KARPENTER_DO_NOT_DISRUPT: "true", CLUSTER_AUTOSCALER_SAFE_TO_EVICT: "false"}]
    assert endpoint.annotations("trainer-a") == {DELETION_COST: "0"}


def test_settings_come_from_the_downward_api_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not PodAnnotationSettings().enabled  # outside Kubernetes: nothing to patch
    monkeypatch.setenv("BERT_EVAL_POD_NAME", "trainer-a")
    monkeypatch.setenv("BERT_EVAL_POD_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("BERT_EVAL_POD_DELETION_COST", "true")
    settings = PodAnnotationSettings()
    assert settings.enabled and settings.name == "trainer-a" and not settings.do_not_disrupt
