{{/* Names and labels. */}}
{{- define "aieval.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aieval.fullname" -}}
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

{{- define "aieval.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "aieval.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "aieval.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aieval.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "aieval.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aieval.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "image" .Values.image "override" $group.image "root" $). */}}
{{- define "aieval.image" -}}
{{- $image := merge (deepCopy (default dict .override)) .image }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* ---- secrets ------------------------------------------------------------------------------------------- */}}
{{/* The Secret's keys, named as the variables; the optional ones only when given. */}}
{{- define "aieval.secretData" -}}
{{- $s := .Values.secrets }}
{{- $data := dict "AIEVAL_SECRET_KEY" $s.secretKey "AIEVAL_DB_URL" $s.databaseUrl "AIEVAL_BROKER_URL" $s.brokerUrl }}
{{- range $key, $value := dict "AIEVAL_REDIS_URL" $s.redisUrl "AIEVAL_S3_ACCESS_KEY_ID" $s.s3AccessKeyId "AIEVAL_S3_SECRET_ACCESS_KEY" $s.s3SecretAccessKey "AIEVAL_METRICS_TOKEN" $s.metricsToken "AIEVAL_OIDC_CLIENT_SECRET" $s.oidcClientSecret "AIEVAL_INITIAL_ADMIN_PASSWORD" $s.initialAdminPassword }}
{{- if $value }}{{ $_ := set $data $key $value }}{{ end }}
{{- end }}
{{- range $key, $value := $data }}
{{ $key }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}

{{/* Refuses values that would give a server that does not start or loses data, with a message that says why. */}}
{{- define "aieval.validate" -}}
{{- $s := .Values.secrets }}
{{- if $s.existingSecret }}
{{- range $field := list "secretKey" "databaseUrl" "brokerUrl" "redisUrl" "s3AccessKeyId" "s3SecretAccessKey" "metricsToken" "oidcClientSecret" "initialAdminPassword" }}
{{- if index $s $field }}
{{- fail (printf "secrets.%s is set together with secrets.existingSecret: put it in the Secret %q (as its AIEVAL_* key) or drop existingSecret" $field $s.existingSecret) }}
{{- end }}
{{- end }}
{{- else }}
{{- $_ := required "secrets.secretKey (AIEVAL_SECRET_KEY) is required: the Fernet key that encrypts stored API keys, shared by the API and every worker; the server refuses to start in production without it. Generate one with  python -c \"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\"  and pass it with -f a values file you keep safe, or name a Secret of yours in secrets.existingSecret" $s.secretKey }}
{{- $_ := required "secrets.databaseUrl (AIEVAL_DB_URL) is required: the PostgreSQL database, e.g. postgresql+psycopg://aieval:PASSWORD@postgres.example:5432/aieval" $s.databaseUrl }}
{{- $_ := required "secrets.brokerUrl (AIEVAL_BROKER_URL) is required: the broker every worker shares, e.g. redis://:PASSWORD@redis.example:6379/0" $s.brokerUrl }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not (or $s.existingSecret $s.metricsToken)) }}
{{- fail "metrics.serviceMonitor.enabled needs secrets.metricsToken (AIEVAL_METRICS_TOKEN): the API's /metrics answers only a scraper presenting it" }}
{{- end }}
{{- if and .Values.flower.enabled (not (or .Values.flower.basicAuth .Values.flower.existingSecret)) }}
{{- fail "flower.enabled needs a sign-in: flower.basicAuth (\"user:password\") or flower.existingSecret (a Secret with the key FLOWER_BASIC_AUTH)" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts: the host names people type (they are added to AIEVAL_TRUSTED_HOSTS)" }}
{{- end }}
{{- range $key, $_ := .Values.config.extra }}
{{- if has $key (include "aieval.reservedNames" $ | fromJsonArray) }}
{{- fail (printf "config.extra.%s: the chart sets this variable itself; use its own value (secrets.*, s3.*, config.*) instead" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Variables config.extra may not set: the secrets, and those the chart sets from its own values. */}}
{{- define "aieval.reservedNames" -}}
{{- list "AIEVAL_SECRET_KEY" "AIEVAL_DB_URL" "AIEVAL_BROKER_URL" "AIEVAL_REDIS_URL" "AIEVAL_S3_ACCESS_KEY_ID" "AIEVAL_S3_SECRET_ACCESS_KEY" "AIEVAL_METRICS_TOKEN" "AIEVAL_OIDC_CLIENT_SECRET" "AIEVAL_INITIAL_ADMIN_PASSWORD" "AIEVAL_ENV" "AIEVAL_STORAGE" "AIEVAL_S3_BUCKET" "AIEVAL_S3_REGION" "AIEVAL_S3_ENDPOINT_URL" "AIEVAL_S3_PREFIX" "AIEVAL_KEY_PREFIX" "AIEVAL_LOG_LEVEL" "AIEVAL_LOG_FORMAT" "AIEVAL_TRUSTED_HOSTS" "AIEVAL_INITIAL_ADMIN_USERNAME" "AIEVAL_DATA_DIR" | toJson }}
{{- end }}

{{- define "aieval.secretName" -}}
{{- default (include "aieval.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* ---- settings ------------------------------------------------------------------------------------------ */}}
{{/* The ConfigMap's data: config.extra and the chart's settings (validate keeps them apart). */}}
{{- define "aieval.configData" -}}
{{- $data := deepCopy .Values.config.extra }}
{{- $_ := set $data "AIEVAL_ENV" "prod" }}
{{- $_ := set $data "AIEVAL_STORAGE" "s3" }}
{{- $_ := set $data "AIEVAL_S3_BUCKET" .Values.s3.bucket }}
{{- $_ := set $data "AIEVAL_S3_REGION" .Values.s3.region }}
{{- if .Values.s3.endpointUrl }}{{ $_ := set $data "AIEVAL_S3_ENDPOINT_URL" .Values.s3.endpointUrl }}{{ end }}
{{- if .Values.s3.prefix }}{{ $_ := set $data "AIEVAL_S3_PREFIX" .Values.s3.prefix }}{{ end }}
{{- if .Values.config.keyPrefix }}{{ $_ := set $data "AIEVAL_KEY_PREFIX" .Values.config.keyPrefix }}{{ end }}
{{- $_ := set $data "AIEVAL_LOG_LEVEL" .Values.config.logLevel }}
{{- $_ := set $data "AIEVAL_LOG_FORMAT" .Values.config.logFormat }}
{{- range $key, $value := $data }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* AIEVAL_TRUSTED_HOSTS as JSON; $(POD_IP) is expanded by Kubernetes from the env entry before it. */}}
{{- define "aieval.trustedHosts" -}}
{{- $api := printf "%s-api" (include "aieval.fullname" .) }}
{{- $hosts := concat .Values.config.trustedHosts .Values.ingress.hosts (list $api (printf "%s.%s" $api .Release.Namespace) (printf "%s.%s.svc" $api .Release.Namespace)) }}
{{- append (uniq $hosts) "$(POD_IP)" | toJson }}
{{- end }}

{{- define "aieval.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* The env of every server process: (dict "root" $ "secret" NAME "api" BOOL). Secrets by name, never by value;
     with secrets.existingSecret the optional keys may be missing from it. */}}
{{- define "aieval.serverEnv" -}}
{{- $root := .root }}
{{- $s := $root.Values.secrets }}
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
- name: AIEVAL_TRUSTED_HOSTS
  value: {{ include "aieval.trustedHosts" $root | quote }}
{{- range $name := list "AIEVAL_SECRET_KEY" "AIEVAL_DB_URL" "AIEVAL_BROKER_URL" }}
{{ include "aieval.secretEnv" (dict "name" $name "secret" $.secret) }}
{{- end }}
{{- $optional := dict "AIEVAL_REDIS_URL" $s.redisUrl "AIEVAL_S3_ACCESS_KEY_ID" $s.s3AccessKeyId "AIEVAL_S3_SECRET_ACCESS_KEY" $s.s3SecretAccessKey }}
{{- if .api }}
{{- $_ := set $optional "AIEVAL_METRICS_TOKEN" $s.metricsToken }}
{{- $_ := set $optional "AIEVAL_OIDC_CLIENT_SECRET" $s.oidcClientSecret }}
{{- $_ := set $optional "AIEVAL_INITIAL_ADMIN_PASSWORD" $s.initialAdminPassword }}
{{- end }}
{{- range $name, $value := $optional }}
{{- if or $s.existingSecret $value }}
{{ include "aieval.secretEnv" (dict "name" $name "secret" $.secret "optional" (not (empty $s.existingSecret))) }}
{{- end }}
{{- end }}
{{- if and .api $root.Values.config.initialAdminUsername }}
- name: AIEVAL_INITIAL_ADMIN_USERNAME
  value: {{ $root.Values.config.initialAdminUsername | quote }}
{{- end }}
{{- end }}

{{/* Pod annotations that restart the pods when their settings change. */}}
{{- define "aieval.checksums" -}}
checksum/config: {{ include "aieval.configData" . | sha256sum }}
checksum/secret: {{ printf "%s%s" (include "aieval.secretData" .) .Values.secrets.existingSecret | sha256sum }}
{{- end }}
