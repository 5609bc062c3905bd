{{/*
The app's `secretstore` Component (Kubernetes Secrets of the release namespace) and its
Dapr Configuration. Rendered as objects with the injector, as files in explicit mode.
*/}}

{{- define "todo.daprSecretStore" -}}
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: secretstore
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "todo.labels" . | nindent 4 }}
spec:
  type: secretstores.kubernetes
  version: v1
  metadata:
    - name: defaultNamespace
      value: {{ .Release.Namespace | quote }}
# Only the app ids whose components read Secrets; each one's Role allows exactly those.
scopes:
  {{- toYaml .Values.dapr.secretStoreScopes | nindent 2 }}
{{- end -}}

{{- define "todo.daprConfiguration" -}}
{{- $v := .Values -}}
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: {{ $v.dapr.configName }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "todo.labels" . | nindent 4 }}
spec:
  # mTLS is the control plane's (the daprsystem Configuration), not the app's.
  tracing:
    samplingRate: {{ $v.dapr.tracing.samplingRate | quote }}
    {{- with $v.dapr.tracing.otlpEndpoint }}
    otel:
      endpointAddress: {{ . | quote }}
      protocol: grpc
      isSecure: false
    {{- end }}
  metrics:
    enabled: true
    http:
      # Route templates only: no per-path series.
      increasedCardinality: false
  logging:
    apiLogging:
      enabled: false
      obfuscateURLs: true
      omitHealthChecks: true
  # The apps never read Secrets through Dapr's secrets API; components still resolve theirs.
  secrets:
    scopes:
      - storeName: secretstore
        defaultAccess: deny
  {{- if and $v.dapr.accessControl.enabled (eq $v.dapr.mode "injector") }}
  # Service invocation only from the listed app ids of this namespace (mTLS identities).
  accessControl:
    defaultAction: deny
    trustDomain: {{ $v.dapr.accessControl.trustDomain | quote }}
    policies:
      {{- range $v.dapr.accessControl.allowFrom }}
      - appId: {{ . }}
        defaultAction: allow
        trustDomain: {{ $v.dapr.accessControl.trustDomain | quote }}
        namespace: {{ $.Release.Namespace | quote }}
      {{- end }}
  {{- end }}
  # Peers by the app's own Service (a virtual IP with daprd's internal port), not the pod
  # addresses of an <app-id>-dapr headless Service: a caller's daprd keeps one gRPC connection
  # per peer and re-resolves a name at most every 30 s, so when the pod it holds goes away it
  # dials the virtual IP again and lands on a live replica at once.
  nameResolution:
    component: kubernetes
    version: v1
    configuration:
      template: {{ printf "%s-{{.ID}}.{{.Namespace}}.svc.%s:{{.Port}}" (include "todo.fullname" .) $v.dapr.clusterDomain | quote }}
{{- end -}}

{{/* The explicit-mode ConfigMap: the components and the secret store, as daprd files. */}}
{{- define "todo.daprResourcesConfigMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "todo.fullname" . }}-dapr-resources
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "todo.labels" . | nindent 4 }}
data:
  {{- range $path, $_ := .Files.Glob "dapr/*.yaml" }}
  {{ base $path }}: |
    {{- $.Files.Get $path | trim | nindent 4 }}
  {{- end }}
  secretstore.yaml: |
    {{- include "todo.daprSecretStore" . | nindent 4 }}
{{- end -}}

{{- define "todo.daprConfigConfigMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "todo.fullname" . }}-dapr-config
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "todo.labels" . | nindent 4 }}
data:
  configuration.yaml: |
    {{- include "todo.daprConfiguration" . | nindent 4 }}
{{- end -}}

{{/* A digest of everything daprd loads at start: the components, the secret store, the Configuration. */}}
{{- define "todo.daprChecksum" -}}
{{- $parts := list -}}
{{- range $path, $_ := .Files.Glob "dapr/*.yaml" -}}
{{- $parts = append $parts ($.Files.Get $path) -}}
{{- end -}}
{{- $parts = append $parts (include "todo.daprSecretStore" .) -}}
{{- $parts = append $parts (include "todo.daprConfiguration" .) -}}
{{- join "\n---\n" $parts | sha256sum -}}
{{- end -}}
