{{- define "kflow.name" -}}{{ .Release.Name }}-kflow{{- end }}
{{- define "kflow.labels" -}}
app.kubernetes.io/name: kflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "kflow.selector" -}}
app.kubernetes.io/name: kflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}
{{- define "kflow.redisSecret" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}{{ else }}{{ include "kflow.name" . }}-redis{{ end }}
{{- end }}
