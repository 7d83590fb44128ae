"""Every Grafana panel shows data when a real Prometheus scrapes real workers through a real experiment.

Stack: Temporal dev server, a training and an eval worker process, and the Prometheus server binary
scraping both workers' metrics ports every second. The experiment has two tiny runs, one run with a
missing dataset and one with a missing model (real activity and workflow failures); the training worker
is SIGKILLed once the longer run has a checkpoint, and a new training worker resumes it. Then a
three-trial ASHA search runs (the search dashboard's data). At the end the Temporal server is stopped
(a real outage: the workers' polls fail). Then every variable, target and annotation query of every
dashboard is sent to Prometheus the way Grafana sends it (instant targets at the end, the rest as range
queries over the test); no data fails the test, naming the dashboard, the panel and the expression.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import Stack, WorkerProcess, stop_process
from support.ports import free_port
from support.specs import tiny_run

from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.storage.layout import RunLayout
from bert_eval.temporal.devserver import wait_for_http
from bert_eval.temporal.workflows import training_workflow_id

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "charts" / "bert-eval" / "dashboards"
SCRAPE_S = 1.0
NAMESPACE, RELEASE = "bert-eval", "bert-eval"  # the series' labels as a scrape in a cluster gives them
STEP_S = 2.0  # range-query step, and what $__interval stands for
RATE_INTERVAL = "15s"
HEARTBEAT_TIMEOUT_S = 5.0
# The run that gets its worker killed: 250 steps of the tiny model, so the kill lands mid-training.
LONG_TRAIN = {"max_train_samples": 2000, "batch_size": 8, "checkpoint_every_steps": 20, "logging_steps": 5}
# One intra-op thread: the tiny model does not need more, and several workers sharing a small CI machine
# otherwise oversubscribe its cores (10x slower steps).
WORKER_ENV = {"OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- Prometheus server


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """The real server binary; installed with apt-get once per session if missing (never skipped)."""

    def find() -> Path | None:
        found = shutil.which("prometheus")
        if found:
            return Path(found)
        return Path("/usr/bin/prometheus") if Path("/usr/bin/prometheus").is_file() else None

    if (binary := find()) is not None:
        return binary
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = ""
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    for command in (["apt-get", "update", "-qq"], install):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            output += f"$ {' '.join(command)} (exit {done.returncode})\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            output += f"$ {' '.join(command)}: {exc}\n"
    if (binary := find()) is None:
        pytest.fail(
            "the Prometheus server binary is required for the observability test and was not found "
            "(PATH, /usr/bin/prometheus); installing it failed:\n"
            f"{output}\nInstall it (Debian/Ubuntu: `apt-get install -y prometheus`) and rerun."
        )
    return binary


def _get(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


class Prometheus:
    """A Prometheus server on a free loopback port, scraping targets listed in file_sd files."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        interval = f"{SCRAPE_S:g}s"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": f"bert-eval-{kind}",
                    "file_sd_configs": [{"files": [str(self._targets_file(kind))], "refresh_interval": "1s"}],
                }
                for kind in ("training", "eval")
            ],
        }
        for kind in ("training", "eval"):
            self.set_targets(kind, [])
        config_file = workdir / "prometheus.yml"
        config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_file = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=open(self.log_file, "wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for_http(f"{self.url}/-/ready", self.process, self.log_file, timeout_s=30)

    def _targets_file(self, kind: str) -> Path:
        return self.workdir / f"targets-{kind}.json"

    def set_targets(self, kind: str, workers: list[WorkerProcess]) -> None:
        target = self._targets_file(kind)
        staging = target.with_suffix(".tmp")
        # The labels a cluster's scrape adds to every worker series (the chart's ServiceMonitor / pod labels),
        # which the dashboards filter on: one release's series only.
        labels = {"namespace": NAMESPACE, "app_kubernetes_io_instance": RELEASE}
        staging.write_text(
            json.dumps([{"targets": [f"127.0.0.1:{w.metrics_port}" for w in workers], "labels": labels}])
        )
        os.replace(staging, target)  # file_sd must never read a half-written file

    def targets(self) -> list[dict[str, Any]]:
        return _get(f"{self.url}/api/v1/targets?state=active")["data"]["activeTargets"]

    def wait_scraped(self, workers: list[WorkerProcess], *, after: float, timeout_s: float = 30.0) -> None:
        """Until every worker's target was scraped successfully at or after `after` (unix seconds)."""
        wanted = {f"127.0.0.1:{w.metrics_port}" for w in workers}
        deadline = time.monotonic() + timeout_s
        while True:
            fresh = {
                t["labels"]["instance"]
                for t in self.targets()
                if t["health"] == "up" and _unix(t["lastScrape"]) >= after
            }
            if wanted <= fresh:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prometheus did not scrape {sorted(wanted - fresh)} after {after}: {self.targets()}"
                )
            time.sleep(0.25)

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        return _get(f"{self.url}/api/v1/query?{params}")["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        return _get(f"{self.url}/api/v1/query_range?{params}")["data"]["result"]

    def label_values(self, label: str, metric: str, start: float, end: float) -> list[str]:
        params = urllib.parse.urlencode({"match[]": metric, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        return _get(f"{self.url}/api/v1/label/{label}/values?{params}")["data"]

    def close(self) -> None:
        stop_process(self.process, timeout_s=20)


def _unix(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def stack(tmp_path: Path, data_dir: Path) -> Iterator[Stack]:
    """A server of this test's own: the test stops it, for the outage panels."""
    stack = Stack.start(tmp_path, data_dir)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def prometheus(prometheus_binary: Path, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(prometheus_binary, tmp_path / "prometheus")
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------- dashboards


def _dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert {f.name for f in files} >= {
        "bert-eval-overview.json",
        "bert-eval-training.json",
        "bert-eval-workers.json",
        "bert-eval-search.json",
    }
    return {f.name: json.loads(f.read_text()) for f in files}


_RELEASE = 'namespace="$namespace", app_kubernetes_io_instance="$release"'
# The runs a dashboard shows: every run of the release, or on the search dashboard the trials of the chosen searches.
_RUN_QUERY = f"label_values(bert_eval_training_step{{{_RELEASE}}}, run_id)"
_TRIAL_QUERY = f'label_values(bert_eval_search_rung_objective{{{_RELEASE}, experiment_id=~"$experiment_id"}}, run_id)'
_EXPERIMENT_QUERY = f"label_values(bert_eval_search_trials{{{_RELEASE}}}, experiment_id)"


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return query.get("query", "") if isinstance(query, dict) else str(query or variable.get("definition", ""))


def test_dashboards_are_grafana_models_on_a_prometheus_variable() -> None:
    for name, model in _dashboards().items():
        assert model.get("schemaVersion", 0) >= 39, name
        assert model.get("uid") and model.get("title"), name
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus", (
            name
        )
        run_id = variables["run_id"]
        # One release's runs: the namespace and release constants the chart fills in when it renders the dashboard.
        assert (variables["namespace"]["type"], variables["release"]["type"]) == ("constant", "constant"), name
        if name == "bert-eval-search.json":
            experiment_id = variables["experiment_id"]
            assert (
                _variable_query(experiment_id) == _EXPERIMENT_QUERY
                and experiment_id["multi"]
                and experiment_id["includeAll"]
            )
            assert _variable_query(run_id) == _TRIAL_QUERY
            exprs = [t["expr"] for p in _panels(model) for t in p.get("targets", [])]
            assert exprs and all('experiment_id=~"$experiment_id"' in e for e in exprs), (
                "every search panel filters on the search"
            )
        else:
            assert _variable_query(run_id) == _RUN_QUERY, name
        assert run_id["multi"] and run_id["includeAll"], name
        ids = [p["id"] for p in _panels(model)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in _panels(model):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), (name, panel["title"])
        for annotation in model["annotations"]["list"]:
            if not annotation.get("builtIn"):
                assert annotation["datasource"]["uid"] == "${datasource}" and annotation["expr"], (
                    name,
                    annotation["name"],
                )


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def _substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def _grafana_regex_escape(value: str) -> str:
    """Grafana's escaping of a value it puts into a PromQL regex string: a doubled backslash before each
    metacharacter."""
    return re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\\\1", value)


def _has_value(series: list[dict[str, Any]]) -> bool:
    """At least one finite sample (a panel of NaNs shows nothing either)."""
    for one in series:
        samples = one.get("values") or [one["value"]]
        if any(math.isfinite(float(value)) for _, value in samples):
            return True
    return False


def _check_dashboard(name: str, model: dict[str, Any], prom: Prometheus, start: float, end: float) -> list[str]:
    """Problems: every variable, target and annotation query must return data, as Grafana would run it."""
    problems: list[str] = []
    values = {
        "__interval": f"{STEP_S:g}s",
        "__rate_interval": RATE_INTERVAL,
        "__range": f"{math.ceil(end - start)}s",
        "__range_s": str(math.ceil(end - start)),
        "__range_ms": str(math.ceil(end - start) * 1000),
    }
    for variable in model["templating"]["list"]:
        if variable["type"] == "constant":  # the chart renders them: this release's namespace and name
            values[variable["name"]] = {"namespace": NAMESPACE, "release": RELEASE}[variable["name"]]
            continue
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?),\s*(\w+)\)", _variable_query(variable))
        assert match, f"{name}: variable {variable['name']} is not label_values(series, label)"
        found = prom.label_values(match.group(2), _substitute(match.group(1), values), start, end)
        if not found:
            problems.append(f"{name}: variable ${variable['name']} ({_variable_query(variable)}) has no values")
        # "All", expanded the way Grafana does without an allValue: every value, as a regex alternation.
        values[variable["name"]] = "(" + "|".join(_grafana_regex_escape(v) for v in found) + ")"

    def check(where: str, expr: str, *, instant: bool) -> None:
        try:
            query = _substitute(expr, values)
            result = prom.query(query, end) if instant else prom.query_range(query, start, end, STEP_S)
        except (KeyError, OSError) as exc:  # urllib's HTTPError (bad PromQL: 400) is an OSError
            detail = exc.read().decode()[:300] if hasattr(exc, "read") else str(exc)
            problems.append(f"{where}: {expr}\n    -> error: {detail}")
            return
        if not _has_value(result):
            problems.append(f"{where}: {expr}\n    -> {'instant' if instant else 'range'} query returned no data")

    for panel in _panels(model):
        for target in panel.get("targets", []):
            instant = bool(target.get("instant")) and not target.get("range")
            check(f"{name} / panel {panel['title']!r} / {target['refId']}", target["expr"], instant=instant)
    for annotation in model["annotations"]["list"]:
        if annotation.get("expr"):
            check(f"{name} / annotation {annotation['name']!r}", annotation["expr"], instant=False)
    return problems


def _sample(prom: Prometheus, expr: str, at: float) -> list[str]:
    lines = []
    for series in sorted(prom.query(expr, at), key=lambda s: sorted(s["metric"].items())):
        labels = {k: (Path(v).name if k == "model" else v) for k, v in series["metric"].items() if k != "__name__"}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        lines.append(f"{series['metric'].get('__name__', expr)}{{{text}}} {series['value'][1]}")
    return lines


# --------------------------------------------------------------------------- the experiment


def _search(model_dir: Path) -> dict[str, Any]:
    """Three trials of 6 steps (96 training rows, 24 held out), rungs at 2 and 6: one promoted, two stopped."""
    template = tiny_run(
        model_dir,
        "template",
        max_train_samples=120,
        checkpoint_every_steps=None,
        checkpoint_every_seconds=None,
        eval_samples=32,
    )
    template.pop("run_id")
    return {
        "experiment_id": "prom-search",
        "defaults": template,
        "search": {
            "space": {"train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]}},
            "sampler": "random",
            "trials": 3,
            "max_concurrent": 2,
            "seed": 1,
            "objective": {"metric": "accuracy", "mode": "max", "split": "search", "holdout": 0.2},
            "scheduler": {"type": "asha", "min_steps": 2, "reduction_factor": 3},
        },
    }


async def _workflow_failed(stack: Stack, workflow_id: str) -> bool:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    try:
        description = await (await stack.client()).get_workflow_handle(workflow_id).describe()
    except RPCError:  # not started yet
        return False
    return description.status == WorkflowExecutionStatus.FAILED


async def _wait_until_resumable(stack: Stack, run_id: str, timeout_s: float = 180.0) -> None:
    """Until the run has a checkpoint on disk and the server holds a heartbeat of its fine-tune attempt
    (which the resumed attempt reads to report recovery time and steps redone, as after any crash)."""
    client = await stack.client()
    layout = RunLayout(stack.runs_dir, run_id)
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, f"run {run_id} published no checkpoint within {timeout_s:.0f} s"
        assert not layout.summary_file.exists(), f"run {run_id} finished before the kill; raise its max_train_samples"
        if CheckpointStore(layout.checkpoints).latest_complete() is not None and await _heartbeat_recorded(
            client, run_id
        ):
            return
        await asyncio.sleep(0.05)


async def _heartbeat_recorded(client: Any, run_id: str) -> bool:
    description = await client.get_workflow_handle(training_workflow_id(run_id)).describe()
    return any(
        pending.activity_type.name == "fine_tune" and pending.heartbeat_details.payloads
        for pending in description.raw_description.pending_activities
    )


@pytest.mark.slow
def test_every_dashboard_panel_shows_data_from_a_real_experiment(
    stack: Stack, prometheus: Prometheus, tiny_model_dir: Path
) -> None:
    dashboards = _dashboards()
    started = time.time()
    training = stack.start_worker("training", wait=False, **WORKER_ENV)
    evaluator = stack.start_worker("eval", wait=False, **WORKER_ENV)
    training.wait_ready()
    evaluator.wait_ready()
    prometheus.set_targets("training", [training])
    prometheus.set_targets("eval", [evaluator])
    prometheus.wait_scraped([training, evaluator], after=time.time())

    broken = tiny_run(tiny_model_dir, "prom-no-data")
    broken["dataset"] = {"path": str(stack.runs_dir.parent / "no-such-dataset")}
    # Fails in its training workflow (the snapshot is the coordinator's): a failed workflow on the dashboards.
    no_model = {**tiny_run(tiny_model_dir, "prom-no-model"), "model": str(stack.runs_dir.parent / "no-such-model")}
    experiment = {
        "experiment_id": "observability",
        "runs": [
            tiny_run(tiny_model_dir, "prom-a", **LONG_TRAIN),
            tiny_run(tiny_model_dir, "prom-b.short", learning_rate=5e-4),  # a dot: Grafana escapes it in $run_id
            broken,
            no_model,
        ],
    }
    resumed = "prom-a"
    background = stack.run_in_background(experiment, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    asyncio.run(_wait_until_resumable(stack, resumed))
    if asyncio.run(_workflow_failed(stack, training_workflow_id("prom-no-model"))):
        # Failed on the worker about to be killed: its count must be scraped first, or it leaves with it.
        prometheus.wait_scraped([training], after=time.time())
    training.kill()
    assert not RunLayout(stack.runs_dir, resumed).summary_file.exists(), (
        f"run {resumed} finished before the kill landed"
    )
    replacement = stack.start_worker("training", wait=False, **WORKER_ENV)
    prometheus.set_targets("training", [replacement])
    result = background.result(timeout_s=300)
    records = {r.run_id: r for r in result.runs}
    for run_id in ("prom-a", "prom-b.short"):
        assert records[run_id].status == "completed", records[run_id].error
        assert records[run_id].training is not None
        assert records[run_id].training.resumes == (1 if run_id == resumed else 0), run_id
    assert records["prom-no-data"].status == "failed" and "does not exist" in (records["prom-no-data"].error or "")
    assert records["prom-no-model"].status == "failed" and "does not exist" in (records["prom-no-model"].error or "")
    searched = stack.run_experiment(_search(tiny_model_dir), heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S).search
    assert searched is not None and searched.finished and searched.rungs == [2, 6] and searched.best is not None
    finished = time.time()

    # A Temporal outage: the surviving workers' polls fail (the poll-failure panel's data).
    stack.server.terminate()
    stack.server.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not prometheus.query("temporal_long_request_failure", time.time()):
        assert time.monotonic() < deadline, "no poll failures scraped 30 s into the Temporal outage"
        time.sleep(0.5)
    now = time.time()
    prometheus.wait_scraped([replacement, evaluator], after=max(now, finished) + 2 * SCRAPE_S)
    end = time.time()

    problems = [
        p for name, model in dashboards.items() for p in _check_dashboard(name, model, prometheus, started, end)
    ]

    # The resume figures come from the worker that resumed (the killed one took its metrics with it).
    new_instance = f"127.0.0.1:{replacement.metrics_port}"
    resumes = prometheus.query(f'bert_eval_training_resumes_total{{run_id="{resumed}"}}', end)
    assert [(r["metric"]["instance"], r["value"][1]) for r in resumes] == [(new_instance, "1")]
    recovery = prometheus.query(f'bert_eval_resume_recovery_seconds{{run_id="{resumed}"}}', end)
    assert len(recovery) == 1 and float(recovery[0]["value"][1]) >= HEARTBEAT_TIMEOUT_S * 0.5
    failures = prometheus.query_range("temporal_activity_execution_failed", started, end, STEP_S)
    # The missing model's fine_tune failure may have been counted by the training worker killed above (its
    # series go with it, scraped or not): the snapshot failure, in the eval worker, is always there.
    assert "snapshot_dataset" in {s["metric"]["activity_type"] for s in failures} <= {"snapshot_dataset", "fine_tune"}

    print(f"\nexperiment {result.experiment_id}: {end - started:.0f} s; run {resumed} resumed on {new_instance}")
    for expr in (
        "bert_eval_training_loss",
        "bert_eval_eval_metric",
        "bert_eval_training_resumes_total",
        "bert_eval_resume_recovery_seconds",
        "bert_eval_resume_steps_lost",
        "temporal_activity_execution_failed",
    ):
        print("\n".join(_sample(prometheus, expr, end)))
    assert not problems, f"{len(problems)} dashboard queries show nothing:\n" + "\n".join(problems)
