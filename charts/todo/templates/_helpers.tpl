{{/*
Names, labels and the checks every template relies on.
*/}}

{{/* The release's base name: the release name, capped for DNS labels. */}}
{{- define "todo.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* A service's object name: <release>-<service>. Call with (dict "root" $ "name" "api"). */}}
{{- define "todo.serviceName" -}}
{{- printf "%s-%s" (include "todo.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "todo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The version label: the image tag (the services' version). */}}
{{- define "todo.version" -}}
{{- .Values.image.tag | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object of the release. */}}
{{- define "todo.labels" -}}
helm.sh/chart: {{ include "todo.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: todo
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ include "todo.version" . | quote }}
{{- end -}}

{{/* Selector labels of one service. Call with (dict "root" $ "name" "api"). */}}
{{- define "todo.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Labels of one service's objects. Call with (dict "root" $ "name" "api"). */}}
{{- define "todo.serviceLabels" -}}
{{ include "todo.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Selector of every pod of the release (network policies between the app's pods). */}}
{{- define "todo.releaseSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A service's image reference. Call with (dict "root" $ "svc" $svc). */}}
{{- define "todo.image" -}}
{{- $img := .root.Values.image -}}
{{- $ref := printf "%s/%s" (trimSuffix "/" $img.repository) .svc.image.name -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $ref $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $img.tag -}}
{{- end -}}
{{- end -}}

{{/* The enabled services, sorted by name: a list of names. */}}
{{- define "todo.enabledServices" -}}
{{- $names := list -}}
{{- range $name, $svc := .Values.services -}}
{{- if $svc.enabled -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* Whether Dapr sidecars are explicit containers of the chart ("true" or ""). */}}
{{- define "todo.daprExplicit" -}}
{{- if eq .Values.dapr.mode "explicit" -}}true{{- end -}}
{{- end -}}

{{/*
The Dapr component documents shipped in dapr/*.yaml (top level only: dapr/local/ is the
local process-mode secret store and never reaches a cluster), parsed: a list of dicts.
*/}}
{{- define "todo.daprComponents" -}}
{{- $docs := list -}}
{{- range $path, $_ := .Files.Glob "dapr/*.yaml" -}}
{{- $docs = append $docs (fromYaml ($.Files.Get $path)) -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}

{{/*
The Secrets daprd reads for one app id through the `secretstore` component: the
secretKeyRef names of every component scoped to that app. Sorted, unique, JSON list.
Call with (dict "root" $ "appId" "api").
*/}}
{{- define "todo.daprSecretNames" -}}
{{- $names := list -}}
{{- range $doc := (include "todo.daprComponents" .root | fromJsonArray) -}}
{{- if has $.appId ($doc.scopes | default list) -}}
{{- range $item := $doc.spec.metadata -}}
{{- if $item.secretKeyRef -}}{{- $names = append $names $item.secretKeyRef.name -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson ($names | uniq | sortAlpha) -}}
{{- end -}}

{{/*
Checks that JSON schema cannot express; each one fails the render with a clear message.
*/}}
{{- define "todo.validate" -}}
{{- $v := .Values -}}
{{- if eq (lower $v.image.tag) "latest" -}}
{{- fail "image.tag is \"latest\": deploy an immutable tag (the commit SHA or the release version) so that a rollback restores the same images" -}}
{{- end -}}
{{- if and (eq $v.dapr.mode "explicit") (ne $v.environment "local") -}}
{{- fail (printf "dapr.mode=explicit runs daprd without mTLS (no Sentry) and is only for environment=local; environment is %q: use dapr.mode=injector" $v.environment) -}}
{{- end -}}
{{- $secretVars := list "TODO_DATABASE_URL" "TODO_JWT_SIGNING_KEY" -}}
{{- range $key, $_ := $v.commonEnv -}}
{{- if has $key $secretVars -}}
{{- fail (printf "commonEnv.%s is a secret: give it through a service's secretEnv (a reference to an existing Secret), never as a value" $key) -}}
{{- end -}}
{{- end -}}
{{- range $name, $svc := $v.services -}}
{{- if $svc.enabled -}}
{{- range $key, $_ := $svc.env -}}
{{- if has $key $secretVars -}}
{{- fail (printf "services.%s.env.%s is a secret: give it through services.%s.secretEnv (a reference to an existing Secret), never as a value" $name $key $name) -}}
{{- end -}}
{{- end -}}
{{- range $env, $ref := $svc.secretEnv -}}
{{- $secret := index $v.secrets $ref | default dict -}}
{{- if not $secret.name -}}
{{- fail (printf "services.%s.secretEnv.%s refers to secrets.%s, which has no name: set secrets.%s.name to an existing Secret" $name $env $ref $ref) -}}
{{- end -}}
{{- end -}}
{{- if and $svc.dapr.enabled (ne $svc.dapr.appId $name) -}}
{{- fail (printf "services.%s.dapr.appId is %q: it must be %q, the name peers resolve to this service's Service (dapr.nameResolution)" $name $svc.dapr.appId $name) -}}
{{- end -}}
{{- $drain := add $svc.preStopSleepSeconds $svc.shutdownTimeoutSeconds $v.dapr.gracefulShutdownSeconds 5 -}}
{{- if lt (int $svc.terminationGracePeriodSeconds) (int $drain) -}}
{{- fail (printf "services.%s.terminationGracePeriodSeconds (%d) must cover preStopSleepSeconds + shutdownTimeoutSeconds + dapr.gracefulShutdownSeconds + 5 s (%d)" $name (int $svc.terminationGracePeriodSeconds) (int $drain)) -}}
{{- end -}}
{{- if and $svc.autoscaling.enabled (gt (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) -}}
{{- fail (printf "services.%s.autoscaling.minReplicas (%d) is above maxReplicas (%d)" $name (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- range $rule := $svc.egress -}}
{{- if not (hasKey $v.networkPolicy.egress $rule) -}}
{{- fail (printf "services.%s.egress names %q, which is not a key of networkPolicy.egress" $name $rule) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $route := $v.ingress.routes -}}
{{- $target := index $v.services $route.service | default dict -}}
{{- if not $target.enabled -}}
{{- fail (printf "ingress.routes: %s goes to service %q, which is not an enabled service" $route.path $route.service) -}}
{{- end -}}
{{- end -}}
{{- end -}}
