{{/* Names and labels. */}}
{{- define "gpuhop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpuhop.fullname" -}}
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

{{- define "gpuhop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpuhop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "gpuhop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gpuhop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gpuhop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpuhop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with the private keys: existing, or made from keys.files. */}}
{{- define "gpuhop.keysSecretName" -}}
{{- if .Values.keys.existingSecret }}
{{- .Values.keys.existingSecret }}
{{- else if .Values.keys.files }}
{{- printf "%s-keys" (include "gpuhop.fullname" .) }}
{{- else }}
{{- fail "keys: set keys.existingSecret (recommended) or keys.files: every replica needs the same host key and CAs (see docs/operations-kubernetes.md)" }}
{{- end }}
{{- end }}

{{/* The Secret with the storage URL: existing, or made from storage.url. */}}
{{- define "gpuhop.storageSecretName" -}}
{{- if .Values.storage.existingSecret }}
{{- .Values.storage.existingSecret }}
{{- else if .Values.storage.url }}
{{- printf "%s-storage" (include "gpuhop.fullname" .) }}
{{- else }}
{{- fail "storage: set storage.existingSecret (recommended) or storage.url to a PostgreSQL URL (postgresql+psycopg://...): replicas share one database" }}
{{- end }}
{{- end }}

{{- define "gpuhop.storageSecretKey" -}}
{{- if .Values.storage.existingSecret }}
{{- .Values.storage.existingSecretKey }}
{{- else }}
{{- print "url" }}
{{- end }}
{{- end }}

{{- define "gpuhop.recordingsClaimName" -}}
{{- default (printf "%s-recordings" (include "gpuhop.fullname" .)) .Values.recordings.persistence.existingClaim }}
{{- end }}

{{/* Where things live inside the container (see deploy/docker/Dockerfile). */}}
{{- define "gpuhop.configDir" -}}/etc/gpuhop/config{{- end }}
{{- define "gpuhop.keysDir" -}}/etc/gpuhop/keys{{- end }}

{{/* The key files the keys Secret must hold, one per [gateway] key path. */}}
{{- define "gpuhop.keyFiles" -}}
gateway_host_ed25519 user_ca host_ca gateway_upstream upstream_ca audit_checkpoint
{{- end }}

{{/* Writable per-pod state (the audit anchor file). */}}
{{- define "gpuhop.stateDir" -}}/var/lib/gpuhop/state{{- end }}
{{- define "gpuhop.recordingsDir" -}}/var/lib/gpuhop/recordings{{- end }}

{{/*
One TOML value from a Helm value: strings quoted (a JSON string is a valid
TOML basic string), whole numbers without a fraction (Helm reads YAML numbers
as floats), booleans as is. Lists and tables belong in config.inventory.
*/}}
{{- define "gpuhop.tomlValue" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}
{{- toJson $v }}
{{- else if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq ($v | float64) (floor $v | float64) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) }}
{{- $v }}
{{- else }}
{{- fail (printf "config.gateway: %v is not a string, number or boolean" $v) }}
{{- end }}
{{- end }}

{{/* The [gateway] keys the chart owns; config.gateway may not set them. */}}
{{- define "gpuhop.ownedKeys" -}}
ssh_host ssh_port api_host api_port storage_url host_key user_ca_key host_ca_key upstream_key upstream_ca_key audit_checkpoint_key audit_anchor_file recordings_dir workers drain_timeout_s log_level log_format
{{- end }}

{{- define "gpuhop.config" -}}
# Rendered by the gpuhop Helm chart. storage_url comes from the environment
# (GPUHOP_GATEWAY__STORAGE_URL, from a Secret).
[gateway]
ssh_host = "0.0.0.0"
ssh_port = {{ int .Values.ports.ssh }}
api_host = "0.0.0.0"
api_port = {{ int .Values.ports.api }}
host_key = "{{ include "gpuhop.keysDir" . }}/gateway_host_ed25519"
user_ca_key = "{{ include "gpuhop.keysDir" . }}/user_ca"
host_ca_key = "{{ include "gpuhop.keysDir" . }}/host_ca"
upstream_key = "{{ include "gpuhop.keysDir" . }}/gateway_upstream"
upstream_ca_key = "{{ include "gpuhop.keysDir" . }}/upstream_ca"
audit_checkpoint_key = "{{ include "gpuhop.keysDir" . }}/audit_checkpoint"
audit_anchor_file = "{{ include "gpuhop.stateDir" . }}/audit_anchor.json"
recordings_dir = "{{ include "gpuhop.recordingsDir" . }}"
workers = 1
drain_timeout_s = {{ include "gpuhop.tomlValue" .Values.config.drainTimeoutSeconds }}
log_level = {{ toJson .Values.config.logLevel }}
log_format = {{ toJson .Values.config.logFormat }}
{{- $owned := splitList " " (include "gpuhop.ownedKeys" .) }}
{{- $extra := .Values.config.gateway }}
{{- if .Values.recordings.s3.enabled }}
{{- $extra = merge (deepCopy .Values.config.gateway) .Values.recordings.s3.gateway }}
{{- end }}
{{- range $key := keys $extra | sortAlpha }}
{{- if has $key $owned }}
{{- fail (printf "config.gateway.%s is set by the chart; use the chart's own value for it" $key) }}
{{- end }}
{{ $key }} = {{ include "gpuhop.tomlValue" (get $extra $key) }}
{{- end }}
{{- with .Values.config.inventory }}

{{ . }}
{{- end }}
{{- end }}
