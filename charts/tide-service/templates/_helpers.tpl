{{/*
tide-service.fullname: the object name, which is the service's catalog name.
*/}}
{{- define "tide-service.fullname" -}}
{{- required "name is required (the catalog service name)" .Values.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
tide-service.selectorLabels: labels that pick this service's pods; never change after install.
*/}}
{{- define "tide-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tide-service.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
tide-service.labels: the recommended app.kubernetes.io labels plus Tide's role.
*/}}
{{- define "tide-service.labels" -}}
{{ include "tide-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.role }}
app.kubernetes.io/part-of: tide
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
