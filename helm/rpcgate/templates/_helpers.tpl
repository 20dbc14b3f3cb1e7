{{/*
The chart's name, or nameOverride.
*/}}
{{- define "rpcgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, the name of its objects: fullnameOverride, else the release name
with the chart's name unless it already contains it. 63 characters at most (DNS names).
*/}}
{{- define "rpcgate.fullname" -}}
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
Name and version of the chart, as the helm.sh/chart label.
*/}}
{{- define "rpcgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the gateway's objects (and of the ServiceMonitor and dashboard about it).
*/}}
{{- define "rpcgate.labels" -}}
{{ include "rpcgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "rpcgate.commonLabels" . }}
{{- end }}

{{- define "rpcgate.commonLabels" -}}
helm.sh/chart: {{ include "rpcgate.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of the gateway's pods. The component keeps the in-chart Redis's pods out
of the gateway's Service, Deployment and PodDisruptionBudget.
*/}}
{{- define "rpcgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rpcgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
The in-chart Redis's names: the StatefulSet and its clients' Service (52 characters at most,
so that a pod's name and its controller-revision-hash label stay under 63), its headless
Service (the pods' own DNS names) and the sentinels' Service.
*/}}
{{- define "rpcgate.redis.fullname" -}}
{{- printf "%s-redis" (include "rpcgate.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{- define "rpcgate.redis.headless" -}}
{{- printf "%s-headless" (include "rpcgate.redis.fullname" .) }}
{{- end }}

{{- define "rpcgate.redis.sentinelService" -}}
{{- printf "%s-sentinel" (include "rpcgate.redis.fullname" .) }}
{{- end }}

{{- define "rpcgate.redis.labels" -}}
{{ include "rpcgate.redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.redis.image.tag | quote }}
{{ include "rpcgate.commonLabels" . }}
{{- end }}

{{- define "rpcgate.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rpcgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
The Redis the gateway's cache uses: redis.url, else the in-chart Redis (through its
sentinels when they are on), else none.
*/}}
{{- define "rpcgate.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if and .Values.redis.enabled .Values.redis.sentinel.enabled }}
{{- printf "redis+sentinel://%s:26379/%s/0" (include "rpcgate.redis.sentinelService" .) .Values.redis.sentinel.masterName }}
{{- else if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "rpcgate.redis.fullname" .) }}
{{- end }}
{{- end }}

{{/*
More than one gateway without a shared Redis: each pod has its own head and its own cache,
and a client balanced across them may see the chain go back a block. Refused unless asked for.
*/}}
{{- define "rpcgate.requireSharedState" -}}
{{- $many := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- $shared := or .Values.redis.url .Values.redis.enabled (.Values.config.cache | default dict).redis_url }}
{{- if and $many (not $shared) (not .Values.redis.allowNoSharedState) }}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs a shared Redis: set redis.enabled=true (a Redis in the chart), redis.url (yours), or replicaCount=1; redis.allowNoSharedState=true runs them without one (each pod its own head and cache)" }}
{{- end }}
{{- end }}

{{/*
The gateway's environment, the same for the init container that validates its config: the
file's path, and every existingSecretKeys entry (the ${VAR}s the config names).
*/}}
{{- define "rpcgate.env" -}}
- name: RPCGATE_CONFIG
  value: /etc/rpcgate/config.yaml
{{- range .Values.existingSecretKeys }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ required "existingSecret: the name of the Secret that holds existingSecretKeys" $.Values.existingSecret }}
      key: {{ . }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints for a set of pods: the values' list, each with a labelSelector
for those pods unless it gives one. Called with (dict "constraints" LIST "selector" YAML).
*/}}
{{- define "rpcgate.topologySpread" -}}
{{- range .constraints }}
{{- $constraint := deepCopy . }}
{{- if not $constraint.labelSelector }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" ($.selector | fromYaml)) }}
{{- end }}
- {{ toYaml $constraint | nindent 2 | trim }}
{{- end }}
{{- end }}

{{/*
rpcgate's config.yaml: .Values.config as given, with cache.redis_url from `redis` unless
the config sets one.
*/}}
{{- define "rpcgate.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $cache := $config.cache | default dict }}
{{- $redisUrl := include "rpcgate.redisUrl" . }}
{{- if and $redisUrl (not $cache.redis_url) }}
{{- $_ := set $cache "redis_url" $redisUrl }}
{{- end }}
{{- $_ := set $config "cache" $cache }}
{{- toYaml $config }}
{{- end }}

{{/*
The port rpcgate listens on, from config.listen (HOST:PORT).
*/}}
{{- define "rpcgate.containerPort" -}}
{{- splitList ":" .Values.config.listen | last | int }}
{{- end }}

{{/*
The operations port (config.ops.listen, HOST:PORT), or nothing when it is not set.
*/}}
{{- define "rpcgate.opsPort" -}}
{{- with .Values.config.ops }}{{- with .listen }}{{- splitList ":" . | last | int }}{{- end }}{{- end }}
{{- end }}

{{/*
What the in-chart Redis's start scripts (redis.yaml) read: who this pod is, pod 0's name
(the first primary), and where the sentinels answer.
*/}}
{{- define "rpcgate.redis.sentinelEnv" -}}
{{- $fullname := include "rpcgate.redis.fullname" . }}
{{- $headless := include "rpcgate.redis.headless" . }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: MY_HOST
  value: "$(POD_NAME).{{ $headless }}.{{ .Release.Namespace }}.svc"
- name: FIRST_PRIMARY
  value: "{{ $fullname }}-0.{{ $headless }}.{{ .Release.Namespace }}.svc"
- name: SENTINEL_SERVICE
  value: {{ include "rpcgate.redis.sentinelService" . }}
- name: MASTER_NAME
  value: {{ .Values.redis.sentinel.masterName | quote }}
- name: REDIS_PORT
  value: "6379"
- name: SENTINEL_PORT
  value: "26379"
{{- end }}
