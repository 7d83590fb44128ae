{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "bert-eval.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<name>, or the release name alone when it
already contains the chart name. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "bert-eval.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "bert-eval.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "bert-eval.labels" -}}
helm.sh/chart: {{ include "bert-eval.chart" . }}
{{ include "bert-eval.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bert-eval
{{- end }}

{{/*
Selector labels shared by every workload of the release; each workload adds
app.kubernetes.io/component.
*/}}
{{- define "bert-eval.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bert-eval.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount of the workers and the starter Job.
*/}}
{{- define "bert-eval.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bert-eval.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the dev Temporal server's Deployment and Service.
*/}}
{{- define "bert-eval.temporalDevName" -}}
{{- printf "%s-temporal" (include "bert-eval.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Temporal frontend address (host:port) for the chosen temporal.mode; empty when
it cannot be known (external mode without temporal.address).
*/}}
{{- define "bert-eval.temporalAddress" -}}
{{- $t := .Values.temporal }}
{{- if $t.address }}
{{- $t.address }}
{{- else if eq $t.mode "dev" }}
{{- printf "%s.%s.svc:7233" (include "bert-eval.temporalDevName" .) .Release.Namespace }}
{{- else if eq $t.mode "chart" }}
{{- printf "%s-frontend.%s.svc:7233" (include "bert-eval.temporalChartFullname" .) $t.chart.namespace }}
{{- end }}
{{- end }}

{{/*
Resource name prefix of the official Temporal chart's release (temporal.mode=chart):
the release name, or <release>-temporal when the release name lacks "temporal"
(the official chart's own fullname rule).
*/}}
{{- define "bert-eval.temporalChartFullname" -}}
{{- $release := .Values.temporal.chart.releaseName }}
{{- ternary $release (printf "%s-temporal" $release) (contains "temporal" $release) }}
{{- end }}

{{/*
A task queue of this release: the name behind taskQueuePrefix. Usage:
  include "bert-eval.taskQueue" (list $ "bert-eval-task-queue")
*/}}
{{- define "bert-eval.taskQueue" -}}
{{- $root := index . 0 }}
{{- with include "bert-eval.taskQueuePrefix" $root }}{{ . }}-{{ end }}{{ index . 1 }}
{{- end }}

{{/*
The task queue prefix in force: taskQueuePrefix, else the release name outside
dev mode (releases sharing a Temporal namespace must not share queues), else
empty (dev mode's server belongs to this release alone).
*/}}
{{- define "bert-eval.taskQueuePrefix" -}}
{{- if .Values.taskQueuePrefix }}
{{- .Values.taskQueuePrefix }}
{{- else if ne .Values.temporal.mode "dev" }}
{{- .Release.Name }}
{{- end }}
{{- end }}

{{/*
"true" when the cluster serves an API group/version, or assumeApiVersions
lists it (rendering without a cluster). Usage:
  include "bert-eval.hasAPI" (list $ "keda.sh/v1alpha1")
*/}}
{{- define "bert-eval.hasAPI" -}}
{{- $root := index . 0 }}
{{- $gv := index . 1 }}
{{- if or ($root.Capabilities.APIVersions.Has $gv) (has $gv $root.Values.assumeApiVersions) }}true{{ end }}
{{- end }}

{{/*
"true" when worker pods patch their own pod (busyPodProtection). Usage:
  include "bert-eval.patchesOwnPod" (list $ "training")
*/}}
{{- define "bert-eval.patchesOwnPod" -}}
{{- $root := index . 0 }}
{{- $b := $root.Values.busyPodProtection }}
{{- if or $b.deletionCost (and $b.doNotDisrupt (eq (index . 1) "training")) }}true{{ end }}
{{- end }}

{{/*
Token mount of a worker pod: on when it patches its own pod. Usage:
  include "bert-eval.workerTokenMount" (list $ "eval")
*/}}
{{- define "bert-eval.workerTokenMount" -}}
{{- $root := index . 0 }}
{{- if include "bert-eval.patchesOwnPod" . }}true{{ else }}{{ $root.Values.serviceAccount.automountServiceAccountToken }}{{ end }}
{{- end }}

{{/*
Environment of a worker that keeps its own pod's annotations
(bert_eval.temporal.pod_annotations). Usage:
  include "bert-eval.busyPodEnv" (list $ "training")
*/}}
{{- define "bert-eval.busyPodEnv" -}}
{{- $root := index . 0 }}
{{- $b := $root.Values.busyPodProtection }}
{{- if include "bert-eval.patchesOwnPod" . -}}
- name: BERT_EVAL_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- /* The release's namespace is the pod's: a plain value (podman kube play, which plays these
pods in tests, has no metadata.namespace field reference). */}}
- name: BERT_EVAL_POD_NAMESPACE
  value: {{ $root.Release.Namespace | quote }}
- name: BERT_EVAL_POD_DELETION_COST
  value: {{ $b.deletionCost | quote }}
- name: BERT_EVAL_POD_DO_NOT_DISRUPT
  value: {{ and $b.doNotDisrupt (eq (index . 1) "training") | quote }}
{{- end }}
{{- end }}

{{/*
Port of the Temporal address (digits after the last colon; 7233 otherwise).
*/}}
{{- define "bert-eval.temporalPort" -}}
{{- $addr := include "bert-eval.temporalAddress" . }}
{{- $port := regexFind "[0-9]+$" $addr }}
{{- if and (contains ":" $addr) $port }}{{ $port }}{{ else }}7233{{ end }}
{{- end }}

{{/*
OTLP endpoint URL of bert-eval pods: otel.endpoint, else the in-chart
collector when tracing.enabled, else empty (no export).
*/}}
{{- define "bert-eval.otlpEndpoint" -}}
{{- if .Values.otel.endpoint }}
{{- .Values.otel.endpoint }}
{{- else if .Values.tracing.enabled }}
{{- printf "http://%s-otel-collector.%s.svc:4317" (include "bert-eval.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Port of the OTLP endpoint URL (4317 when the URL names none).
*/}}
{{- define "bert-eval.otlpPort" -}}
{{- $hostport := regexReplaceAll "^[a-zA-Z]+://" (include "bert-eval.otlpEndpoint" .) "" | splitList "/" | first }}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" }}
{{- default "4317" $port }}
{{- end }}

{{/*
Image reference. Usage: include "bert-eval.image" (list $ .Values.images.eval)
*/}}
{{- define "bert-eval.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/*
Name of the shared bert_runs claim.
*/}}
{{- define "bert-eval.runsClaimName" -}}
{{- default (printf "%s-runs" (include "bert-eval.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/*
Pod-level securityContext.
*/}}
{{- define "bert-eval.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/*
Container-level securityContext.
*/}}
{{- define "bert-eval.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
Environment shared by every bert-eval process (workers and starter): Temporal
connection, storage, telemetry. Usage:
  include "bert-eval.commonEnv" (dict "root" $ "component" "eval-worker")
*/}}
{{- define "bert-eval.commonEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: TEMPORAL_ADDRESS
  value: {{ include "bert-eval.temporalAddress" $root | quote }}
- name: TEMPORAL_NAMESPACE
  value: {{ $v.temporal.namespace | quote }}
- name: TEMPORAL_TLS
  value: {{ $v.temporal.tls.enabled | quote }}
{{- if and $v.temporal.tls.enabled $v.temporal.tls.serverName }}
- name: TEMPORAL_TLS_SERVER_NAME
  value: {{ $v.temporal.tls.serverName | quote }}
{{- end }}
{{- with include "bert-eval.taskQueuePrefix" $root }}
- name: BERT_EVAL_TASK_QUEUE_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- if and $v.temporal.tls.enabled $v.temporal.tls.existingSecret }}
{{- if $v.temporal.tls.caKey }}
- name: TEMPORAL_TLS_CA_FILE
  value: {{ printf "/etc/temporal-tls/%s" $v.temporal.tls.caKey | quote }}
{{- end }}
{{- if $v.temporal.tls.certKey }}
- name: TEMPORAL_TLS_CERT_FILE
  value: {{ printf "/etc/temporal-tls/%s" $v.temporal.tls.certKey | quote }}
- name: TEMPORAL_TLS_KEY_FILE
  value: {{ printf "/etc/temporal-tls/%s" $v.temporal.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- if $v.temporal.apiKey.existingSecret }}
- name: TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.temporal.apiKey.existingSecret }}
      key: {{ $v.temporal.apiKey.key }}
{{- end }}
- name: BERT_EVAL_RUNS_DIR
  value: {{ $v.persistence.mountPath | quote }}
{{- if $v.dataMirror.existingClaim }}
- name: BERT_EVAL_DATA_DIR
  value: {{ $v.dataMirror.mountPath | quote }}
{{- end }}
- name: BERT_EVAL_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
- name: BERT_EVAL_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
{{- with include "bert-eval.otlpEndpoint" $root }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" $v.otel.serviceNamePrefix .component | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,k8s.pod.name=$(POD_NAME)" $root.Release.Namespace | quote }}
- name: HF_HOME
  value: {{ ternary (printf "%s/hf-home" $v.persistence.mountPath) "/cache/huggingface" $v.huggingFace.cacheOnRunsVolume | quote }}
{{- with $v.huggingFace.token.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.huggingFace.token.key }}
{{- end }}
{{- if not .gpu }}
# No GPU requested: the NVIDIA runtime (a node default on many GPU pools) must not expose every GPU.
- name: NVIDIA_VISIBLE_DEVICES
  value: void
{{- end }}
- name: XDG_CACHE_HOME
  value: /cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: HOME
  value: /tmp
{{- end }}

{{/*
POD_NAME from the downward API; must precede commonEnv (it is referenced
there with $(POD_NAME)).
*/}}
{{- define "bert-eval.podNameEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/*
Volume mounts shared by workers and the starter.
*/}}
{{- define "bert-eval.commonVolumeMounts" -}}
- name: runs
  mountPath: {{ .Values.persistence.mountPath }}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /cache
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret }}
- name: temporal-tls
  mountPath: /etc/temporal-tls
  readOnly: true
{{- end }}
{{- if .Values.dataMirror.existingClaim }}
- name: data-mirror
  mountPath: {{ .Values.dataMirror.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Volumes shared by workers and the starter. Usage:
  include "bert-eval.commonVolumes" (dict "root" $ "cacheSizeLimit" "10Gi")
*/}}
{{- define "bert-eval.commonVolumes" -}}
{{- $root := .root -}}
- name: runs
  persistentVolumeClaim:
    claimName: {{ include "bert-eval.runsClaimName" $root }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: cache
  emptyDir:
    sizeLimit: {{ .cacheSizeLimit }}
{{- if and $root.Values.temporal.tls.enabled $root.Values.temporal.tls.existingSecret }}
- name: temporal-tls
  secret:
    secretName: {{ $root.Values.temporal.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if $root.Values.dataMirror.existingClaim }}
- name: data-mirror
  persistentVolumeClaim:
    claimName: {{ $root.Values.dataMirror.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}

{{/*
HTTP probes against the worker's metrics port.
*/}}
{{- define "bert-eval.workerProbes" -}}
{{- $p := .Values.probes -}}
startupProbe:
  httpGet:
    path: {{ $p.startup.path }}
    port: metrics
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: {{ $p.liveness.path }}
    port: metrics
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ $p.readiness.path }}
    port: metrics
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end }}

{{/*
Pod-level settings platform teams add per workload (training, eval, starter):
priority, runtime class, topology spread. Usage:
  include "bert-eval.podPlatformFields" .Values.training | nindent 6
*/}}
{{- define "bert-eval.podPlatformFields" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
BERT_EVAL_GRACEFUL_SHUTDOWN_S: how long the worker waits for its activities
after SIGTERM: the pod's terminationGracePeriodSeconds minus
shutdownMarginSeconds, so the final checkpoint and the process exit happen
before the kubelet's SIGKILL. Usage: include "bert-eval.gracefulShutdownEnv" .Values.training
*/}}
{{- define "bert-eval.gracefulShutdownEnv" -}}
- name: BERT_EVAL_GRACEFUL_SHUTDOWN_S
  value: {{ sub (int .terminationGracePeriodSeconds) (int .shutdownMarginSeconds) | quote }}
{{- end }}

{{/*
persistence.volumePermissions: an init container that hands the shared
volume's root to the pods' uid/gid where the storage driver ignores fsGroup.
Root with CHOWN/FOWNER only; needs a `baseline` namespace.
*/}}
{{- define "bert-eval.volumePermissionsInit" -}}
{{- if .Values.persistence.volumePermissions.enabled }}
{{- $uid := int .Values.podSecurityContext.runAsUser }}
{{- $gid := int (default .Values.podSecurityContext.runAsGroup .Values.podSecurityContext.fsGroup) }}
initContainers:
  - name: volume-permissions
    image: {{ include "bert-eval.image" (list . .Values.images.eval) }}
    imagePullPolicy: {{ .Values.images.eval.pullPolicy }}
    command:
      - sh
      - -c
      - {{ printf "chown %d:%d %s && chmod 2775 %s" $uid $gid .Values.persistence.mountPath .Values.persistence.mountPath | quote }}
    resources:
      requests:
        cpu: 10m
        memory: 32Mi
      limits:
        memory: 64Mi
    securityContext:
      runAsNonRoot: false
      runAsUser: 0
      runAsGroup: 0
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop:
          - ALL
        add:
          - CHOWN
          - FOWNER
      seccompProfile:
        type: RuntimeDefault
    volumeMounts:
      - name: runs
        mountPath: {{ .Values.persistence.mountPath }}
{{- end }}
{{- end }}

{{/*
A KEDA ScaledObject for one worker pool that scales on what waits and what
runs: the task queue's backlog (temporal trigger) plus the attempts the pool's
workers run (prometheus trigger on bert_eval_worker_attempts_running), summed
by scalingModifiers. A pool with running work never drops below the pods that
run it, and the pods removed are the idle ones (busyPodProtection).
*/}}
{{- define "bert-eval.scaledObject" -}}
{{- $root := .root }}
{{- $t := $root.Values.temporal }}
{{- $keda := $root.Values.autoscaling.keda }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "bert-eval.fullname" $root }}-{{ .component }}
  labels:
    {{- include "bert-eval.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "bert-eval.fullname" $root }}-{{ .component }}
  minReplicaCount: {{ .minReplicas }}
  maxReplicaCount: {{ .maxReplicas }}
  pollingInterval: {{ .pollingInterval }}
  cooldownPeriod: {{ .cooldownPeriod }}
  {{- if $keda.prometheus.enabled }}
  advanced:
    scalingModifiers:
      # Waiting tasks plus running attempts, {{ .perReplica }} per pod.
      formula: "backlog + running"
      target: {{ .perReplica | quote }}
      activationTarget: "0"
      metricType: AverageValue
  {{- end }}
  triggers:
    - type: temporal
      name: backlog
      metadata:
        endpoint: {{ include "bert-eval.temporalAddress" $root | quote }}
        namespace: {{ $t.namespace | quote }}
        taskQueue: {{ .queue | quote }}
        queueTypes: {{ .queueTypes | quote }}
        targetQueueSize: {{ .perReplica | quote }}
        activationTargetQueueSize: {{ $keda.activationTargetQueueSize | quote }}
        {{- if and $t.tls.enabled $t.tls.serverName }}
        tlsServerName: {{ $t.tls.serverName | quote }}
        {{- end }}
      {{- if .auth }}
      authenticationRef:
        name: {{ include "bert-eval.fullname" $root }}-temporal
      {{- end }}
    {{- if $keda.prometheus.enabled }}
    - type: prometheus
      name: running
      metadata:
        serverAddress: {{ $keda.prometheus.serverAddress | quote }}
        query: {{ printf "sum(bert_eval_worker_attempts_running{kind=%q,task_queue=%q}) or vector(0)" .kind .queue | quote }}
        threshold: {{ .perReplica | quote }}
        activationThreshold: "0"
    {{- end }}
{{- end }}
