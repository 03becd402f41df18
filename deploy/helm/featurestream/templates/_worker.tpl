{{/*
A consumer-group worker (processor or sink): its Deployment, and a headless Service that exists
so a ServiceMonitor can find the pods' metrics port (/metrics, /health, /ready).
Call with (dict "root" $ "component" "processor" "role" .Values.processor "command" "process" "group" "online").
*/}}
{{- define "featurestream.worker" -}}
{{- $args := concat (list .command "--metrics-host" "0.0.0.0" "--metrics-port" (toString .role.metricsPort)) .role.extraArgs -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "featurestream.fullname" .root }}-{{ .component }}
  labels:
    {{- include "featurestream.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  # Each replica joins consumer group <prefix>-{{ .group }}; Kafka shares the partitions among them,
  # so more replicas than partitions leaves idle standbys.
  replicas: {{ .role.replicas }}
  selector:
    matchLabels:
      {{- include "featurestream.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
  template:
    {{- include "featurestream.podTemplate" (dict "root" .root "component" .component "role" .role "args" $args "port" .role.metricsPort "portName" "metrics") | nindent 4 }}
---
{{ include "featurestream.metricsService" (dict "root" .root "component" .component "port" .role.metricsPort) }}
{{- end -}}


{{/*
A headless Service that exists so a ServiceMonitor can find a worker's metrics port (/metrics,
/health, /ready). Call with (dict "root" $ "component" "processor" "port" 9108).
*/}}
{{- define "featurestream.metricsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "featurestream.fullname" .root }}-{{ .component }}-metrics
  labels:
    {{- include "featurestream.labels" (dict "root" .root "component" .component) | nindent 4 }}
    featurestream.io/metrics: "true"
spec:
  clusterIP: None
  selector:
    {{- include "featurestream.selectorLabels" (dict "root" .root "component" .component) | nindent 4 }}
  ports:
    - name: metrics
      port: {{ .port }}
      targetPort: metrics
      protocol: TCP
{{- end -}}
