{{- define "iro.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iro.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "iro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The pod labels a Deployment selects: the release's for the main one; a shard's own
instance and shard label for a shard's (so that no Deployment selects another's pods). */}}
{{- define "iro.podSelectorLabels" -}}
{{- if .shard -}}
app.kubernetes.io/name: {{ include "iro.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}-shard-{{ .shard }}
replication.imageops.io/shard: {{ .shard }}
{{- else -}}
{{ include "iro.selectorLabels" .root }}
{{- end -}}
{{- end -}}

{{- define "iro.labels" -}}
{{ include "iro.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "iro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "iro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
