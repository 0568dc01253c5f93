{{/* The chart's name. */}}
{{- define "sforg-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: names every object of the release. */}}
{{- define "sforg-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sforg-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sforg-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sforg-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sforg-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sforg-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sforg-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sforg-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The callback's public URL: publicUrl, or https://<ingress host>. */}}
{{- define "sforg-operator.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "https://%s" .Values.ingress.host }}
{{- end }}
{{- end }}

{{/*
The least the operator needs in a namespace it reconciles (a Role there, or a ClusterRole for
every namespace). Each rule names the code that needs it.
*/}}
{{- define "sforg-operator.rules" -}}
# SalesforceOrgs: the controller lists and watches them and adds and removes its finalizer
# with a patch; the re-auth callback reads one org and records its outcome with a patch.
- apiGroups: [orgtokens.dev]
  resources: [salesforceorgs]
  verbs: [get, list, watch, patch]
# Status is written with a merge patch (never read back through the subresource).
- apiGroups: [orgtokens.dev]
  resources: [salesforceorgs/status]
  verbs: [patch]
# Secrets: credentials and token Secrets are read by name; token Secrets are created (owned
# by their org, without blockOwnerDeletion, so no finalizers permission is needed even with
# OwnerReferencesPermissionEnforcement) and replaced with a resourceVersion precondition;
# the controller watches token Secrets by label. RBAC cannot narrow by label, so list and
# watch cover every Secret of the namespace; the operator's cache holds only labelled ones.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update]
# Dependent CronJobs: watched as metadata (a CronJob created or relabelled into a held
# selector is suspended at once), listed by an org that holds, and patched (spec.suspend and
# one annotation).
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [list, watch, patch]
# Events on state changes and on CronJobs suspended or resumed (a repeated Event is patched).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* The Secret in the release namespace that holds the callback's state-signing key. */}}
{{- define "sforg-operator.stateSecretName" -}}
{{- printf "%s-state-key" (include "sforg-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Lease that elects the leader, in the release namespace. */}}
{{- define "sforg-operator.leaseName" -}}
{{- printf "%s-leader" (include "sforg-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where /metrics listens: every pod address, or loopback for a sidecar to publish it. */}}
{{- define "sforg-operator.metricsListen" -}}
{{- if eq .Values.metrics.exposure "all" }}
{{- printf "0.0.0.0:%v" .Values.metrics.port }}
{{- else }}
{{- printf "127.0.0.1:%v" .Values.metrics.port }}
{{- end }}
{{- end }}

{{/* The container port the kubelet probes: the metrics port, or the health-only port. */}}
{{- define "sforg-operator.probePort" -}}
{{- if eq .Values.metrics.exposure "all" }}http-metrics{{ else }}http-health{{ end }}
{{- end }}
