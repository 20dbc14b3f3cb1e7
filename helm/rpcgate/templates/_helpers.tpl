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

{{- define "rpcgate.redis.fullname" -}}
{{- printf "%s-redis" (include "rpcgate.fullname" . | trunc 57 | trimSuffix "-") }}
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
The Redis the gateway's cache uses: redis.url, else the in-chart Redis's Service, else none.
*/}}
{{- define "rpcgate.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "rpcgate.redis.fullname" .) }}
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
