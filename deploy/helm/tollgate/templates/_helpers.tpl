{{/*
Names, labels and the environment shared by the gateway pods and the migration Job.
*/}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; the release name alone when it already contains the chart name. */}}
{{- define "tollgate.fullname" -}}
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

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The gateway pods' selector. The component label keeps the migration pod, which carries the
same name and instance, out of the Service, the PodDisruptionBudget and the NetworkPolicy.
*/}}
{{- define "tollgate.gatewaySelectorLabels" -}}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The pre-install hook runs before the chart's own ServiceAccount exists. */}}
{{- define "tollgate.migrationServiceAccountName" -}}
{{- if .Values.migrationJob.serviceAccountName }}
{{- .Values.migrationJob.serviceAccountName }}
{{- else if .Values.serviceAccount.create }}
{{- "default" }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tollgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "tollgate.masterkeySecretName" -}}
{{- .Values.masterkeySecretName | default (printf "%s-masterkey" (include "tollgate.fullname" .)) }}
{{- end }}

{{- define "tollgate.masterkeySecretKey" -}}
{{- .Values.masterkeySecretKey | default "masterkey" }}
{{- end }}

{{- define "tollgate.configMapName" -}}
{{- if .Values.proxyConfigMap.create }}
{{- printf "%s-config" (include "tollgate.fullname" .) }}
{{- else }}
{{- .Values.proxyConfigMap.name }}
{{- end }}
{{- end }}

{{/* Where a per-pod SQLite database lives when no shared database is configured. */}}
{{- define "tollgate.sqliteDir" -}}
/var/lib/tollgate
{{- end }}

{{/*
The migration Job runs only against a shared database, and only as a hook: a plain Job
would race the pods it is meant to precede.
*/}}
{{- define "tollgate.migrationJobEnabled" -}}
{{- if and .Values.migrationJob.enabled .Values.db.useExisting }}true{{- end }}
{{- end }}

{{/* The worst number of pods the Deployment may run, for the shared-database check. */}}
{{- define "tollgate.manyReplicas" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{- define "tollgate.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.shutdown.preStopSleepSeconds) (int .Values.shutdown.graceSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 15 }}
{{- else if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + shutdown.graceSeconds (%d), or streams are killed before they drain" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Refuses values that would deploy something other than what they say: settings of LiteLLM's
chart this chart does not implement, and combinations that cannot work.
*/}}
{{- define "tollgate.validate" -}}
{{- if and .Values.db.deployStandalone (not .Values.db.useExisting) }}
{{- fail "db.deployStandalone: this chart does not bundle PostgreSQL; run one (e.g. CloudNativePG) and set db.useExisting: true with db.url and db.secret" }}
{{- end }}
{{- if and (include "tollgate.manyReplicas" .) (not .Values.db.useExisting) }}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs a shared database: set db.useExisting: true, db.url and db.secret; without it each pod would keep its own virtual keys" }}
{{- end }}
{{- if and .Values.redis.enabled (not (or .Values.redis.host .Values.redis.url .Values.redis.secret.urlKey)) }}
{{- fail "redis.enabled: this chart does not bundle Redis; set redis.host, redis.url or redis.secret.urlKey to the Redis or Valkey you run" }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.redis.secret.passwordKey .Values.redis.secret.urlKey) (not .Values.redis.secret.name) }}
{{- fail "redis.secret.passwordKey or redis.secret.urlKey is set: redis.secret.name must name the Secret" }}
{{- end }}
{{- if and (not .Values.proxyConfigMap.create) (not .Values.proxyConfigMap.name) }}
{{- fail "proxyConfigMap.create is false: proxyConfigMap.name must name the existing ConfigMap holding config.yaml" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled: tls.secretName must name a kubernetes.io/tls Secret" }}
{{- end }}
{{- if and (include "tollgate.migrationJobEnabled" .) (not (or .Values.migrationJob.hooks.helm.enabled .Values.migrationJob.hooks.argocd.enabled)) }}
{{- fail "migrationJob needs migrationJob.hooks.helm.enabled or migrationJob.hooks.argocd.enabled, so it runs before the pods; or set migrationJob.enabled: false and the gateway migrates at start" }}
{{- end }}
{{- if .Values.separateHealthApp }}
{{- fail "separateHealthApp: Tollgate serves /health/liveliness and /health/readiness on the main port; remove the setting" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- fail "keda.enabled: this chart scales with a HorizontalPodAutoscaler; use autoscaling.enabled" }}
{{- end }}
{{- if .Values.serviceMonitor.enabled }}
{{- fail "serviceMonitor.enabled: this chart has no ServiceMonitor; scrape /metrics on the service port (see podAnnotations)" }}
{{- end }}
{{- if and .Values.pdb.enabled (kindIs "invalid" .Values.pdb.minAvailable) (kindIs "invalid" .Values.pdb.maxUnavailable) }}
{{- fail "pdb.enabled: set pdb.minAvailable or pdb.maxUnavailable" }}
{{- end }}
{{- end }}

{{/*
The database environment, in an order that lets DATABASE_URL's $(VAR) references see every
variable before it. Used by the gateway container and the migration container alike.
*/}}
{{- define "tollgate.databaseEnv" -}}
{{- if .Values.db.useExisting }}
{{- with .Values.db.secret }}
{{- if .usernameKey }}
- name: DATABASE_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .usernameKey }}
{{- end }}
{{- if .passwordKey }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- if not .Values.db.secret.urlKey }}
- name: DATABASE_HOST
{{- if .Values.db.secret.endpointKey }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.db.secret.name }}
      key: {{ .Values.db.secret.endpointKey }}
{{- else }}
  value: {{ .Values.db.endpoint | quote }}
{{- end }}
- name: DATABASE_NAME
  value: {{ .Values.db.database | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* DATABASE_URL comes last so that its $(VAR) references see every other variable. */}}
{{- define "tollgate.databaseUrlEnv" -}}
{{- if .Values.db.useExisting }}
- name: DATABASE_URL
{{- if .Values.db.secret.urlKey }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.db.secret.name }}
      key: {{ .Values.db.secret.urlKey }}
{{- else }}
  value: {{ required "db.url is required with db.useExisting" .Values.db.url | quote }}
{{- end }}
{{- else }}
- name: DATABASE_URL
  value: {{ printf "sqlite://%s/tollgate.db?mode=rwc" (include "tollgate.sqliteDir" .) | quote }}
{{- end }}
{{- end }}

{{/* The variables of envVars and extraEnvVars, shared by both containers. */}}
{{- define "tollgate.userEnv" -}}
{{- range $name, $value := .Values.envVars }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.extraEnvVars }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tollgate.probeTiming" -}}
initialDelaySeconds: {{ .initialDelaySeconds | default 0 }}
periodSeconds: {{ .periodSeconds | default 10 }}
timeoutSeconds: {{ .timeoutSeconds | default 5 }}
successThreshold: {{ .successThreshold | default 1 }}
failureThreshold: {{ .failureThreshold | default 3 }}
{{- end }}

{{- define "tollgate.envFrom" -}}
{{- range .Values.environmentSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- range .Values.environmentConfigMaps }}
- configMapRef:
    name: {{ . }}
{{- end }}
{{- end }}
