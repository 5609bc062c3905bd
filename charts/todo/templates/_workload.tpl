{{/*
The shared named templates every service is rendered from. Each one takes
(dict "root" $ "name" <service name> "svc" <its values>).
*/}}

{{/* Where daprd finds the API server credentials for the Kubernetes secret store. */}}
{{- define "todo.kubeApiMountPath" -}}/var/run/secrets/kubernetes.io/serviceaccount{{- end -}}

{{/* Whether this service's daprd reads Secrets through the `secretstore` component ("true" or ""). */}}
{{- define "todo.usesSecretStore" -}}
{{- if and .svc.dapr.enabled (has .svc.dapr.appId .root.Values.dapr.secretStoreScopes) -}}true{{- end -}}
{{- end -}}

{{/* How long daprd keeps serving the app after the stop signal: preStop + the app's drain. */}}
{{- define "todo.daprBlockShutdownSeconds" -}}
{{- add .svc.preStopSleepSeconds .svc.shutdownTimeoutSeconds -}}
{{- end -}}

{{/* ---------------------------------------------------------------- Deployment */}}
{{- define "todo.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
{{- $explicit := and $svc.dapr.enabled (eq $v.dapr.mode "explicit") -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "todo.serviceName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "todo.serviceLabels" . | nindent 4 }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  # A rollout that cannot finish is reported after 10 minutes (rollout_wait fails sooner).
  progressDeadlineSeconds: 600
  minReadySeconds: 5
  selector:
    matchLabels:
      {{- include "todo.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Zero downtime: a new pod must be ready before an old one goes.
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "todo.serviceLabels" . | nindent 8 }}
      annotations:
        {{- if and $svc.dapr.enabled (not $explicit) }}
        {{- include "todo.daprAnnotations" . | nindent 8 }}
        {{- end }}
        {{- if $svc.dapr.enabled }}
        # daprd reads its components and Configuration at start: a change rolls the pods.
        checksum/dapr: {{ include "todo.daprChecksum" $root }}
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "todo.serviceName" . }}
      # No API token in the app container; daprd gets one of its own where it needs it.
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- if $v.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: {{ $v.topologySpread.zone }}
          labelSelector:
            matchLabels:
              {{- include "todo.selectorLabels" . | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: {{ $v.topologySpread.node }}
          labelSelector:
            matchLabels:
              {{- include "todo.selectorLabels" . | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
      {{- end }}
      {{- if $explicit }}
      initContainers:
        {{- include "todo.daprSidecar" . | nindent 8 }}
      {{- end }}
      containers:
        {{- include "todo.appContainer" . | nindent 8 }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if include "todo.usesSecretStore" . }}
        # The API token for daprd's Kubernetes secret store only (mounted into daprd alone).
        - name: dapr-kube-api-access
          projected:
            defaultMode: 0444
            sources:
              - serviceAccountToken:
                  path: token
                  expirationSeconds: 3607
              - configMap:
                  name: kube-root-ca.crt
                  items:
                    - {key: ca.crt, path: ca.crt}
              - downwardAPI:
                  items:
                    - path: namespace
                      fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}
        {{- end }}
        {{- if $explicit }}
        - name: dapr-resources
          configMap:
            name: {{ include "todo.fullname" $root }}-dapr-resources
        - name: dapr-config
          configMap:
            name: {{ include "todo.fullname" $root }}-dapr-config
        {{- with $v.dapr.explicit.trustBundle }}
        {{- if .configMap }}
        - name: dapr-trust
          configMap:
            name: {{ .configMap }}
            items:
              - {key: {{ .key }}, path: {{ .key }}}
        {{- end }}
        {{- end }}
        {{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- the app container */}}
{{- define "todo.appContainer" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
- name: {{ .name }}
  image: {{ include "todo.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  ports:
    - name: http
      containerPort: {{ $svc.port }}
      protocol: TCP
  env:
    {{- include "todo.env" . | nindent 4 }}
  startupProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: {{ $svc.startupProbe.periodSeconds }}
    failureThreshold: {{ $svc.startupProbe.failureThreshold }}
    timeoutSeconds: 2
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    periodSeconds: {{ $v.probes.readiness.periodSeconds }}
    timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
    failureThreshold: {{ $v.probes.readiness.failureThreshold }}
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
  lifecycle:
    preStop:
      {{- if and $svc.dapr.enabled $svc.dapr.invocationTarget (eq $v.dapr.mode "explicit") }}
      # Other apps' daprd hold a gRPC connection to this pod's daprd, which as a native sidecar
      # would outlive the app and pass their calls to a closed port. It is stopped 3 s before
      # the sleep ends: by then the Service's rules no longer lead here, so they reconnect to a
      # live replica, and this app still answers what is in flight. (With the injector, such an
      # app's daprd gets no block-shutdown-duration: it stops on the SIGTERM it gets as the pod
      # starts terminating.)
      exec:
        command:
          - python
          - -m
          - todo_shared.prestop
          - --sleep
          - {{ $svc.preStopSleepSeconds | quote }}
          - --stop-dapr-after
          - {{ max 0 (sub (int $svc.preStopSleepSeconds) 3) | quote }}
      {{- else }}
      # Endpoints and the ingress drop the pod before it stops accepting connections.
      sleep:
        seconds: {{ $svc.preStopSleepSeconds }}
      {{- end }}
  resources:
    {{- toYaml $svc.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* ---------------------------------------------------------------- settings */}}
{{- define "todo.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
- name: TODO_ENVIRONMENT
  value: {{ $v.environment | quote }}
- name: TODO_SERVICE_NAME
  value: {{ .name | quote }}
- name: TODO_VERSION
  value: {{ $v.image.tag | quote }}
- name: TODO_PORT
  value: {{ $svc.port | quote }}
- name: TODO_SHUTDOWN_TIMEOUT_SECONDS
  value: {{ $svc.shutdownTimeoutSeconds | quote }}
{{- if eq .name "web" }}
- name: TODO_API_URL
  value: {{ printf "http://%s:%d" (include "todo.serviceName" (dict "root" $root "name" "api")) (int $v.service.port) | quote }}
{{- end }}
{{- range $key, $value := $v.commonEnv }}
{{- if not (hasKey $svc.env $key) }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- range $key, $value := $svc.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- if $svc.dapr.enabled }}
# Set even with the injector: without a sidecar the app's readiness fails (never "no Dapr").
- name: DAPR_HTTP_PORT
  value: "3500"
- name: DAPR_GRPC_PORT
  value: "50001"
- name: DAPR_API_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ $v.secrets.daprApiToken.name | quote }}, key: token}
- name: APP_API_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ $v.secrets.appApiToken.name | quote }}, key: token}
{{- end }}
{{- range $key, $ref := $svc.secretEnv }}
{{- $secret := index $v.secrets $ref }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef: {name: {{ $secret.name | quote }}, key: {{ $secret.key | quote }}}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- Dapr, injector mode */}}
{{- define "todo.daprAnnotations" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
dapr.io/enabled: "true"
dapr.io/app-id: {{ $svc.dapr.appId | quote }}
dapr.io/app-port: {{ $svc.port | quote }}
dapr.io/app-protocol: http
dapr.io/config: {{ $v.dapr.configName | quote }}
dapr.io/log-level: {{ $v.dapr.logLevel | quote }}
dapr.io/log-as-json: "true"
dapr.io/enable-metrics: "true"
dapr.io/metrics-port: "9090"
dapr.io/enable-api-logging: "false"
dapr.io/api-token-secret: {{ $v.secrets.daprApiToken.name | quote }}
dapr.io/app-token-secret: {{ $v.secrets.appApiToken.name | quote }}
dapr.io/sidecar-cpu-request: {{ $svc.dapr.resources.requests.cpu | quote }}
dapr.io/sidecar-cpu-limit: {{ $svc.dapr.resources.limits.cpu | quote }}
dapr.io/sidecar-memory-request: {{ $svc.dapr.resources.requests.memory | quote }}
dapr.io/sidecar-memory-limit: {{ $svc.dapr.resources.limits.memory | quote }}
dapr.io/sidecar-seccomp-profile-type: RuntimeDefault
dapr.io/enable-app-health-check: "true"
dapr.io/app-health-check-path: /healthz
{{- if not $svc.dapr.invocationTarget }}
dapr.io/block-shutdown-duration: {{ printf "%ss" (include "todo.daprBlockShutdownSeconds" .) | quote }}
{{- end }}
dapr.io/graceful-shutdown-seconds: {{ $v.dapr.gracefulShutdownSeconds | quote }}
# Components read Secrets through the `secretstore` component only.
dapr.io/disable-builtin-k8s-secret-store: "true"
{{- if include "todo.usesSecretStore" . }}
dapr.io/volume-mounts: {{ printf "dapr-kube-api-access:%s" (include "todo.kubeApiMountPath" .) | quote }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- Dapr, explicit mode */}}
{{/*
daprd as a native sidecar (an init container with restartPolicy Always): it starts
before the app and stops after it, so the app can publish while it drains. Standalone
mode: components and Configuration from the chart's ConfigMap, Secrets through the
Kubernetes secret store with the pod's own token, peers found through the Kubernetes name
resolver (<app-id>-dapr headless Services), no mTLS (no Sentry): local clusters only.
*/}}
{{- define "todo.daprSidecar" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
{{- $x := $v.dapr.explicit -}}
- name: daprd
  image: {{ printf "%s:%s" $x.image.repository $x.image.tag | quote }}
  imagePullPolicy: {{ $x.image.pullPolicy }}
  restartPolicy: Always
  command:
    {{- toYaml $x.command | nindent 4 }}
  args:
    - --mode=standalone
    - --app-id={{ $svc.dapr.appId }}
    - --app-port={{ $svc.port }}
    - --app-protocol=http
    - --app-channel-address=127.0.0.1
    - --dapr-http-port=3500
    - --dapr-grpc-port=50001
    - --dapr-internal-grpc-port=50002
    - --dapr-listen-addresses=127.0.0.1
    - --dapr-public-port=3501
    - --enable-metrics
    - --metrics-port=9090
    - --resources-path=/dapr/resources
    - --config=/dapr/config/configuration.yaml
    - --log-level={{ $v.dapr.logLevel }}
    - --log-as-json
    - --enable-api-logging=false
    - --enable-app-health-check
    - --app-health-check-path=/healthz
    - --dapr-graceful-shutdown-seconds={{ $v.dapr.gracefulShutdownSeconds }}
    {{- with $x.schedulerAddress }}
    - --scheduler-host-address={{ . }}
    {{- end }}
  env:
    - name: NAMESPACE
      valueFrom:
        fieldRef: {fieldPath: metadata.namespace}
    - name: POD_NAME
      valueFrom:
        fieldRef: {fieldPath: metadata.name}
    - name: DAPR_API_TOKEN
      valueFrom:
        secretKeyRef: {name: {{ $v.secrets.daprApiToken.name | quote }}, key: token}
    - name: APP_API_TOKEN
      valueFrom:
        secretKeyRef: {name: {{ $v.secrets.appApiToken.name | quote }}, key: token}
    {{- if $x.trustBundle.configMap }}
    - name: SSL_CERT_FILE
      value: /dapr/trust/{{ $x.trustBundle.key }}
    {{- end }}
  ports:
    - {name: dapr-internal, containerPort: 50002, protocol: TCP}
    - {name: dapr-public, containerPort: 3501, protocol: TCP}
    - {name: dapr-metrics, containerPort: 9090, protocol: TCP}
  startupProbe:
    # Components loaded; the app starts after this (it is not up yet, so not /v1.0/healthz).
    httpGet: {path: /v1.0/healthz/outbound, port: 3501}
    periodSeconds: 1
    failureThreshold: 120
    timeoutSeconds: 2
  readinessProbe:
    httpGet: {path: /v1.0/healthz, port: 3501}
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 3
  livenessProbe:
    httpGet: {path: /v1.0/healthz/outbound, port: 3501}
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 6
  resources:
    {{- toYaml $svc.dapr.resources | nindent 4 }}
  securityContext:
    {{- toYaml (merge (dict "runAsUser" $x.runAsUser "runAsGroup" $x.runAsUser) (deepCopy $v.containerSecurityContext)) | nindent 4 }}
  volumeMounts:
    - name: dapr-resources
      mountPath: /dapr/resources
      readOnly: true
    - name: dapr-config
      mountPath: /dapr/config
      readOnly: true
    {{- if $x.trustBundle.configMap }}
    - name: dapr-trust
      mountPath: /dapr/trust
      readOnly: true
    {{- end }}
    {{- if include "todo.usesSecretStore" . }}
    - name: dapr-kube-api-access
      mountPath: {{ include "todo.kubeApiMountPath" . }}
      readOnly: true
    {{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- Service */}}
{{- define "todo.service" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "todo.serviceName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "todo.serviceLabels" . | nindent 4 }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "todo.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.service.port }}
      targetPort: http
      protocol: TCP
    {{- if .svc.dapr.enabled }}
    # Service invocation: peers' daprd reach this app's daprd here (dapr.nameResolution).
    - name: dapr-internal
      port: 50002
      targetPort: 50002
      protocol: TCP
    - name: dapr-metrics
      port: 9090
      targetPort: 9090
      protocol: TCP
    {{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- ServiceAccount */}}
{{- define "todo.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "todo.serviceName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "todo.serviceLabels" . | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{/* ---------------------------------------------------------------- HorizontalPodAutoscaler */}}
{{- define "todo.hpa" -}}
{{- $svc := .svc -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "todo.serviceName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "todo.serviceLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "todo.serviceName" . }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    {{- toYaml .root.Values.autoscalingBehavior | nindent 4 }}
{{- end -}}

{{/* ---------------------------------------------------------------- PodDisruptionBudget */}}
{{- define "todo.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "todo.serviceName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "todo.serviceLabels" . | nindent 4 }}
spec:
  {{- toYaml .svc.pdb | nindent 2 }}
  # Pods that are not ready yet may always be evicted (a stuck rollout never blocks a drain).
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "todo.selectorLabels" . | nindent 6 }}
{{- end -}}
