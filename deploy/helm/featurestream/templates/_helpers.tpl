{{/* Names, labels and the pieces every role's pod shares. */}}

{{- define "featurestream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "featurestream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "featurestream.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "featurestream.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "featurestream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "featurestream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "featurestream.labels" -}}
{{ include "featurestream.selectorLabels" . }}
app.kubernetes.io/part-of: featurestream
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "featurestream.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else -}}
{{- include "featurestream.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "featurestream.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "featurestream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "featurestream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The pod spec every role shares: non-root, read-only root filesystem, an emptyDir at /tmp
(faust creates its data dir in the temp dir, and Python, pyarrow and s3fs want a writable
one too), endpoints from the ConfigMap and credentials from the Secret.
Call with (dict "root" $ "component" "processor" "role" .Values.processor "args" (list ...) "port" 9108 "portName" "metrics").
*/}}
{{- define "featurestream.podTemplate" -}}
{{- $root := .root -}}
{{- $role := .role -}}
metadata:
  labels:
    {{- include "featurestream.labels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if not $root.Values.secret.existingSecret }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- if $root.Values.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .port | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $role.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "featurestream.serviceAccountName" $root }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $role.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "featurestream.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      workingDir: /tmp
      ports:
        - name: {{ .portName }}
          containerPort: {{ .port }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "featurestream.fullname" $root }}
        - secretRef:
            name: {{ include "featurestream.secretName" $root }}
      {{- with $role.extraEnv }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      livenessProbe:
        httpGet:
          path: /health
          port: {{ .portName }}
        {{- toYaml $role.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /ready
          port: {{ .portName }}
        {{- toYaml $role.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml $role.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if and $role.credentialsSecret $role.credentialsSecret.name }}
        - name: api-keys
          mountPath: /etc/featurestream/api-keys
          readOnly: true
        {{- end }}
        {{- if $root.Values.kafka.security.tlsSecret }}
        - name: kafka-tls
          mountPath: /etc/featurestream/kafka-tls
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.tmpSizeLimit }}
    {{- if and $role.credentialsSecret $role.credentialsSecret.name }}
    - name: api-keys
      secret:
        secretName: {{ $role.credentialsSecret.name }}
        items:
          - key: {{ $role.credentialsSecret.key }}
            path: {{ $role.credentialsSecret.key }}
    {{- end }}
    {{- with $root.Values.kafka.security.tlsSecret }}
    - name: kafka-tls
      secret:
        secretName: {{ . }}
    {{- end }}
  {{- with $role.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $role.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
