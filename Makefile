# bert-eval: `make install`, then `make demo` (offline SST-2 + MiniLM) or `make test`.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
# The local dataset mirror (glue/sst2 lives under it); CI and tests use ../shared/data.
BERT_EVAL_DATA_DIR ?= $(abspath ../shared/data)
export BERT_EVAL_DATA_DIR

.PHONY: install lint test test-fast test-slow demo demo-seeds demo-search up clean bench bench-gpu gpu-kit

$(PYTHON):
	python3 -m venv $(VENV)

# torch is pinned first so nothing later can pull a multi-GB CUDA build.
install: $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'

# ruff (pyflakes, pycodestyle, bugbear, import order, dead noqa), mypy over the package, the import
# contracts between layers (pyproject.toml [tool.ruff], [tool.mypy], [tool.importlinter]).
lint:
	$(PYTHON) -m ruff check services tests benchmarks
	$(PYTHON) -m ruff format --check services tests benchmarks
	$(PYTHON) -m mypy
	$(VENV)/bin/lint-imports --no-cache

# The one test command (CI runs it): lint, then unit, replay, chart/manifests, and integration tests
# against a real Temporal dev server, real workers, the real Trainer and (when installed) a real
# Prometheus, including the fault matrix and the README walkthrough (marked `slow`). Three pytest processes,
# one torch thread each, take whole modules, the longest first (tests/conftest.py orders them).
test: lint
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m "not cluster" -n 3 --dist loadscope --no-loadscope-reorder --durations=25

# Lint, unit, replay and chart tests (no Temporal server, no worker processes).
test-fast: lint
	$(PYTHON) -m pytest -q -m "not integration and not slow and not cluster"

# Only the fault matrix, soak, walkthrough and long-run tests.
test-slow:
	$(PYTHON) -m pytest -q -s -m slow

# Dev server + both workers + the packaged SST-2 MiniLM experiment; prints validation metrics.
demo:
	$(PYTHON) -m bert_eval demo

# Two learning rates x three seeds (MiniLM, 1,000 SST-2 sentences each): per-configuration means with 95%
# intervals, each run's bootstrap interval, and whether the better configuration is significantly better.
demo-seeds:
	$(PYTHON) -m bert_eval demo --experiment services/bert_eval/experiments/sst2-minilm-seeds.yaml \
		--json bert_runs/demo-seeds-results.json

# A 12-trial search (Optuna TPE, ASHA on checkpoints) over MiniLM's learning rate, warmup and weight decay on
# 1,200 SST-2 sentences: prints the leaderboard and the winner's validation metrics.
demo-search:
	$(PYTHON) -m bert_eval demo --experiment services/bert_eval/experiments/sst2-minilm-search.yaml \
		--json bert_runs/demo-search-results.json

up:
	$(PYTHON) -m bert_eval up

# Side-by-side benchmarks (common recipe vs ours, checkpoints, coordinator vs direct, recovery, 100 runs):
# prints a table with ratios, writes benchmarks/results/latest-cpu.json (docs/performance.md).
# Under 15 minutes on 2 CPU cores.
bench:
	$(PYTHON) benchmarks/bench.py --device cpu

# The same code paths on CUDA (bert-base-size random init for throughput, MiniLM for accuracy);
# sized for about 10 minutes on one GPU (an estimate). Writes benchmarks/results/latest-cuda.json.
bench-gpu:
	$(PYTHON) benchmarks/bench.py --device cuda

# For a GPU box without network access: builds .gpu/ (the wheels its image lacks, SST-2, the MiniLM
# tokenizer) for scripts/gpu-bench.sh, which runs the GPU benchmark there (docs/performance.md).
gpu-kit:
	PYTHON=$(PYTHON) scripts/gpu-kit.sh

clean:
	rm -rf .temporal bert_runs

# --- Kubernetes ---
# Run bert-eval on a local kind cluster (needs Docker, kind, helm, kubectl), in order:
#   make kind-up kind-images kind-load deploy   # cluster, CPU image, Temporal + workers + monitoring + KEDA + tracing
#   make experiment                        # starter Job submits manifests/experiment-configmap.yaml; returns once started
#   make chaos                             # kill the busy training worker pod; training resumes
#   make ui                                # Temporal UI, Grafana, Prometheus, Jaeger on localhost
#   make kind-down
# or, after deploy, `make demo-k8s`: submit, wait for the first checkpoint, kill, wait, print `resumes: 1`.
# charts/bert-eval/README.md walks through it, and through a cloud GPU pool.
# manifests/ assume release `bert-eval` in namespace `bert-eval`.
CLUSTER ?= bert-eval
NAMESPACE ?= bert-eval
RELEASE ?= bert-eval
IMAGE_TAG ?= dev
TRAINING_IMAGE ?= bert-eval-training:$(IMAGE_TAG)
EVAL_IMAGE ?= bert-eval-eval:$(IMAGE_TAG)
CHART ?= charts/bert-eval
KIND_VALUES ?= $(CHART)/examples/values-kind.yaml
MONITORING_NAMESPACE ?= monitoring
KEDA_NAMESPACE ?= keda
KPS_VERSION ?= 79.12.0
# 2.20: its temporal scaler reads an unversioned queue's backlog with DescribeTaskQueue(ReportStats),
# which the dev server (Temporal 1.32, CLI 1.9.1) serves; 2.17-2.19 call DescribeTaskQueueEnhanced,
# the versioning-v2 API Temporal deprecated.
KEDA_VERSION ?= 2.20.0
TEMPORAL_UI_PORT ?= 18233
GRAFANA_PORT ?= 13000
PROMETHEUS_PORT ?= 19090
JAEGER_PORT ?= 16686
# experiment_id of manifests/experiment-configmap.yaml (the tests keep them equal).
EXPERIMENT_ID ?= sst2-minilm
KUBECTL = kubectl --context kind-$(CLUSTER)
HELM = helm --kube-context kind-$(CLUSTER)
# The bert-eval CLI inside the running eval worker pod: it has the release's Temporal address and
# the shared volume, so nothing on the host needs a port-forward.
IN_CLUSTER = $(KUBECTL) -n $(NAMESPACE) exec deploy/$(RELEASE)-eval-worker -- bert-eval

.PHONY: kind-up images images-local test-cluster kind-images kind-load deploy experiment chaos demo-k8s ui kind-down chart-lint release

# The host directory shared by every node as /bert_runs (kind-config.yaml).
# World-writable because pods run as uid 10001 and hostPath volumes ignore fsGroup.
kind-up:
	mkdir -p .kind/bert_runs
	printf '*\n' > .kind/.gitignore
	chmod 0777 .kind/bert_runs
	kind get clusters 2>/dev/null | grep -qx '$(CLUSTER)' || \
		kind create cluster --name $(CLUSTER) --config kind-config.yaml --wait 180s

# Upstream bases and indexes by default; override e.g. PYTHON_IMAGE=... TRAINING_TORCH_INDEX=...
# (the training image's default is PyPI's CUDA 13.0 torch; the CPU index makes a CPU image).
PYTHON_IMAGE ?= python:3.11.13-slim-bookworm
TRAINING_TORCH_INDEX ?= https://pypi.org/simple
EVAL_TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Built for the nodes' platform, not the build machine's (an arm64 laptop would otherwise push
# images amd64 GPU nodes cannot run): PLATFORM=linux/arm64 for Graviton/Ampere pools.
PLATFORM ?= linux/amd64
images:
	docker build --platform $(PLATFORM) -f services/Dockerfile.training --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
		--build-arg TORCH_INDEX_URL=$(TRAINING_TORCH_INDEX) -t $(TRAINING_IMAGE) .
	docker build --platform $(PLATFORM) -f services/Dockerfile.eval --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
		--build-arg TORCH_INDEX_URL=$(EVAL_TORCH_INDEX) -t $(EVAL_IMAGE) .

# Without Docker or pullable base images (root, podman): a debootstrap Debian base, both worker
# images (CPU torch) and a Temporal dev-server image, all in podman's storage (scripts/local-images.sh).
images-local:
	IMAGE_TAG=$(IMAGE_TAG) scripts/local-images.sh

# The chart's own pods under `podman kube play`: submit, kill the training pod, resume; and `make release`
# against a local docker-registry, the chart pulled back from oci:// and rendered (tests/cluster).
test-cluster: images-local
	CONTAINERS_CONF=$(CURDIR)/scripts/containers.conf $(PYTHON) -m pytest -q -m cluster tests/cluster

# Both images and the chart to one registry: `make release REGISTRY=ghcr.io/my-org VERSION=0.3.0`, then
# `helm install bert-eval oci://ghcr.io/my-org/bert-eval --version 0.3.0 -f values-<profile>.yaml`
# (scripts/release.sh: PLATFORMS=linux/amd64,linux/arm64 for multi-arch, BUILD=0 to push local images).
REGISTRY ?=
VERSION ?=
release:
	REGISTRY=$(REGISTRY) VERSION=$(VERSION) PYTHON=$(PYTHON) scripts/release.sh

# kind has no GPUs: the kind profile runs the training worker on the CPU (eval) image, so only that
# image is built and loaded; the multi-GB CUDA image never reaches the nodes. kind's nodes run on the
# Docker server's own architecture (an arm64 Mac's Docker runs arm64 nodes), so the kind targets build
# for that platform, whatever PLATFORM says; Docker >= 28 (containerd image store, `docker save --platform`).
KIND_PLATFORM ?= $(or $(shell docker version --format '{{.Server.Os}}/{{.Server.Arch}}' 2>/dev/null | grep -xE '[a-z]+/[a-z0-9]+'),linux/amd64)
kind-images:
	docker build --platform $(KIND_PLATFORM) -f services/Dockerfile.eval --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
		--build-arg TORCH_INDEX_URL=$(EVAL_TORCH_INDEX) -t $(EVAL_IMAGE) .

# Through an archive: `kind load docker-image` fails with Docker's containerd image store (the
# default from Docker 29) when the image has no content for every platform of its index.
kind-load:
	mkdir -p .kind
	docker save --platform $(KIND_PLATFORM) -o .kind/eval-image.tar $(EVAL_IMAGE)
	kind load image-archive --name $(CLUSTER) .kind/eval-image.tar
	rm -f .kind/eval-image.tar

# kube-prometheus-stack and KEDA from their public charts, then this chart, which has no
# dependencies (nothing to fetch for it; Temporal is its dev server on kind).
deploy:
	helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
	helm repo add kedacore https://kedacore.github.io/charts --force-update
	helm repo update prometheus-community kedacore
	$(HELM) upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
		--version $(KPS_VERSION) --namespace $(MONITORING_NAMESPACE) --create-namespace \
		-f $(CHART)/examples/kube-prometheus-stack-kind.yaml --wait --timeout 15m
	$(HELM) upgrade --install keda kedacore/keda --version $(KEDA_VERSION) \
		--namespace $(KEDA_NAMESPACE) --create-namespace --wait --timeout 10m
	$(KUBECTL) apply -f manifests/namespace.yaml
	$(HELM) upgrade --install $(RELEASE) $(CHART) --namespace $(NAMESPACE) -f $(KIND_VALUES) \
		--set images.training.tag=$(IMAGE_TAG) --set images.eval.tag=$(IMAGE_TAG) \
		--set networkPolicy.kedaNamespace=$(KEDA_NAMESPACE) --wait --timeout 15m
	$(KUBECTL) -n $(NAMESPACE) get pods -o wide

# Returns once the experiment is submitted, so `make chaos` can follow; the Job keeps watching it.
experiment:
	$(KUBECTL) -n $(NAMESPACE) delete job bert-eval-starter --ignore-not-found
	$(KUBECTL) apply -f manifests/experiment-configmap.yaml -f manifests/starter-job.yaml
	$(IN_CLUSTER) wait $(EXPERIMENT_ID) --until started --timeout 600
	@echo "follow it: $(KUBECTL) -n $(NAMESPACE) logs -f job/bert-eval-starter"

chaos:
	$(KUBECTL) apply -f manifests/chaos-rbac.yaml
	$(KUBECTL) -n $(NAMESPACE) delete job bert-eval-chaos --ignore-not-found
	$(KUBECTL) apply -f manifests/chaos-job.yaml
	$(KUBECTL) -n $(NAMESPACE) logs -f --pod-running-timeout=5m job/bert-eval-chaos

# The resume, end to end: submit, wait for the first checkpoint, delete the training worker pod with
# no grace period (as `bert-eval chaos kill --target k8s` does), wait for the result: `resumes: 1`.
# Every demo submits manifests/experiment-configmap.yaml under fresh ids (experiment and run ids end in
# -<DEMO_ID>), so it follows the experiment it submitted: an earlier one of the same id would be
# found finished, and its runs reused instead of trained.
DEMO_ID := $(shell date +%s)
demo-k8s:
	$(KUBECTL) -n $(NAMESPACE) delete job bert-eval-starter --ignore-not-found
	sed -e 's/^\(    experiment_id: .*\)$$/\1-$(DEMO_ID)/' -e 's/^\(      - run_id: .*\)$$/\1-$(DEMO_ID)/' manifests/experiment-configmap.yaml | $(KUBECTL) apply -f -
	$(KUBECTL) apply -f manifests/starter-job.yaml
	$(IN_CLUSTER) wait $(EXPERIMENT_ID)-$(DEMO_ID) --until started --timeout 600
	$(IN_CLUSTER) wait $(EXPERIMENT_ID)-$(DEMO_ID) --until checkpoint --timeout 1800
	$(KUBECTL) -n $(NAMESPACE) delete pod --grace-period=0 --force -l app.kubernetes.io/instance=$(RELEASE),app.kubernetes.io/component=training-worker
	$(IN_CLUSTER) wait $(EXPERIMENT_ID)-$(DEMO_ID) --until done --timeout 7200

# kind also maps NodePorts: Temporal UI http://localhost:8233, Grafana http://localhost:3000.
ui:
	@echo "Temporal UI  http://localhost:$(TEMPORAL_UI_PORT)"
	@echo "Grafana      http://localhost:$(GRAFANA_PORT)  (admin / see: $(KUBECTL) -n $(MONITORING_NAMESPACE) get secret kube-prometheus-stack-grafana -o jsonpath='{.data.admin-password}' | base64 -d)"
	@echo "Prometheus   http://localhost:$(PROMETHEUS_PORT)"
	@echo "Jaeger       http://localhost:$(JAEGER_PORT)  (traces, service bert-eval-*)"
	@echo "Ctrl-C stops the port-forwards."
	$(KUBECTL) -n $(NAMESPACE) port-forward svc/$(RELEASE)-temporal $(TEMPORAL_UI_PORT):8233 & \
	$(KUBECTL) -n $(MONITORING_NAMESPACE) port-forward svc/kube-prometheus-stack-grafana $(GRAFANA_PORT):80 & \
	$(KUBECTL) -n $(MONITORING_NAMESPACE) port-forward svc/kube-prometheus-stack-prometheus $(PROMETHEUS_PORT):9090 & \
	$(KUBECTL) -n $(NAMESPACE) port-forward svc/$(RELEASE)-jaeger $(JAEGER_PORT):16686 & \
	wait

kind-down:
	kind delete cluster --name $(CLUSTER)

# helm lint every profile; without a helm binary, the chart tests (embedded Helm engine) lint instead.
chart-lint:
	@if command -v helm >/dev/null 2>&1; then \
		for f in $(CHART)/ci/*-values.yaml $(CHART)/examples/values-*.yaml; do \
			echo "helm lint -f $$f"; helm lint $(CHART) -f $$f || exit 1; \
		done; \
	else \
		$(PYTHON) -m pytest tests/k8s -q -k lint; \
	fi
