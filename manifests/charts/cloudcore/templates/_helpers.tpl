{{/*
The labels every object of the chart carries, and the Deployment's selector.
*/}}
{{- define "cloudcore.labels" -}}
{{ toYaml .Values.cloudCore.labels }}
{{- end -}}
