{{- /*
Names. The release's objects are called after the release; "-kflow" is appended only when the
release name does not already say kflow, so `helm install kflow` makes "kflow", not
"kflow-kflow". fullnameOverride replaces the rule. Kubernetes names stop at 63 characters.
*/ -}}
{{- define "kflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "kflow.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "kflow.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kflow.serverSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "kflow.redisSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "kflow.serviceAccount" -}}{{ include "kflow.fullname" . }}{{- end }}

{{- /* The Secret the operator reads Redis from: the user's, or the one this chart writes. */ -}}
{{- /* "true" when the operator keeps a Redis user per namespace (redis.tenants), else "". */}}
{{- define "kflow.tenants" -}}
{{- if or (eq .Values.redis.tenants "on") (and (eq .Values.redis.tenants "auto") .Values.redis.deploy) }}true{{ end }}
{{- end }}

{{- define "kflow.redisSecret" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}{{ else }}{{ include "kflow.fullname" . }}-redis{{ end }}
{{- end }}

{{- define "kflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- /*
Pod Security "restricted", shared by every pod the chart makes (operator, Redis, helm test):
no root, no privilege escalation, no capabilities, the runtime's default seccomp profile.
*/ -}}
{{- define "kflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "kflow.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- /*
The namespace `helm test` runs its Flow in: tests.namespace, else the release's own when the
operator watches it, else the first watched namespace.
*/ -}}
{{- define "kflow.testNamespace" -}}
{{- if .Values.tests.namespace -}}
{{- .Values.tests.namespace -}}
{{- else if or (not .Values.watchNamespaces) (has .Release.Namespace .Values.watchNamespaces) -}}
{{- .Release.Namespace -}}
{{- else -}}
{{- first .Values.watchNamespaces -}}
{{- end -}}
{{- end }}

{{- /*
Combinations of values the schema cannot state clearly; each message names the values.
Included once, from the operator's Deployment.
*/ -}}
{{- define "kflow.validate" -}}
{{- if and .Values.redis.deploy .Values.redis.tls -}}
{{- fail "redis.deploy=true with redis.tls=true: the bundled Redis serves no TLS. Use redis.tls=false with redis.deploy, or point redis.url / redis.existingSecret at a Redis with TLS and set redis.deploy=false." -}}
{{- end -}}
{{- if and .Values.redis.deploy .Values.redis.existingSecret -}}
{{- fail (printf "redis.deploy=true with redis.existingSecret=%s: the bundled Redis writes its own Secret (URL and generated password). Unset one of them." .Values.redis.existingSecret) -}}
{{- end -}}
{{- if and .Values.redis.deploy .Values.redis.tlsCaKey -}}
{{- fail (printf "redis.deploy=true with redis.tlsCaKey=%s: the bundled Redis serves no TLS, so there is no CA to trust." .Values.redis.tlsCaKey) -}}
{{- end -}}
{{- if and (eq .Values.rbac.scope "namespace") (not .Values.watchNamespaces) -}}
{{- fail "rbac.scope=namespace needs watchNamespaces (the namespaces to grant Roles in); with watchNamespaces empty the operator watches every namespace and needs rbac.scope=cluster." -}}
{{- end -}}
{{- if and .Values.redis.deploy .Values.redis.persistence.enabled .Values.redis.persistence.hostPath .Values.redis.persistence.existingClaim -}}
{{- fail "redis.persistence.hostPath and redis.persistence.existingClaim are both set: hostPath makes a volume and a claim of its own; set one of them." -}}
{{- end -}}
{{- end }}

{{- /*
The bundled Redis's configuration: every write logged to an append-only file fsynced each
second (at most a second of writes lost on a crash), no RDB snapshots, and a full Redis
refusing writes rather than evicting flow state. Arguments: password, maxmemory.
*/ -}}
{{- define "kflow.redisConf" -}}
port 6379
bind * -::*
protected-mode yes
dir /data
appendonly yes
appendfsync everysec
appenddirname appendonlydir
save ""
maxmemory {{ .maxmemory }}
maxmemory-policy noeviction
requirepass {{ .password }}
{{- end }}
