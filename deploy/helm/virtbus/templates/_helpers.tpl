{{- define "virtbus.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "virtbus.labels" -}}
app.kubernetes.io/part-of: virtbus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "name" $name) */}}
{{- define "virtbus.selector" -}}
app.kubernetes.io/name: virtbus
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "virtbus.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image $tag -}}
{{- end -}}

{{/* The Secret of a role's credentials; '@' is not allowed in names. */}}
{{- define "virtbus.credsSecret" -}}
{{- printf "%s-creds-%s" (include "virtbus.fullname" .root) (.role | replace "@" "-") -}}
{{- end -}}

{{- define "virtbus.secretKeySecret" -}}
{{- .Values.secretKey.existingSecret | default (printf "%s-secret-key" (include "virtbus.fullname" .)) -}}
{{- end -}}
