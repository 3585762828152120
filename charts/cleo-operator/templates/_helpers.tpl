{{/*
Names, labels and the checks of values that a JSON schema cannot express.
*/}}

{{- define "cleo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name, with the chart name unless it already has it.
Kept to 52 characters so that suffixed names (-tenant, -dashboards) stay within 63.
*/}}
{{- define "cleo-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cleo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cleo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cleo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cleo-operator.labels" -}}
helm.sh/chart: {{ include "cleo-operator.chart" . }}
{{ include "cleo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cleo-operator
{{- end }}

{{- define "cleo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cleo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: required when serviceAccount.create is false (name the ServiceAccount the operator runs as)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ClusterRole of the operator's own rights in a tenant namespace: never bound by the
chart, bound by the operator in each tenant namespace (kube/permissions.py, scope tenant).
*/}}
{{- define "cleo-operator.tenantRole" -}}
{{- include "cleo-operator.fullname" . }}-tenant
{{- end }}

{{/*
The user name the operator's ServiceAccount authenticates as (the admission policy's match).
*/}}
{{- define "cleo-operator.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "cleo-operator.serviceAccountName" . }}
{{- end }}

{{- define "cleo-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The backup runner's image: each part defaults to the operator's, and the operator's digest
only while neither the repository nor the tag is set for the runner.
*/}}
{{- define "cleo-operator.backupImage" -}}
{{- $own := .Values.backup.image }}
{{- $repository := default .Values.image.repository $own.repository }}
{{- $digest := $own.digest }}
{{- if and (not $digest) (not $own.repository) (not $own.tag) }}
{{- $digest = .Values.image.digest }}
{{- end }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (default (default .Chart.AppVersion .Values.image.tag) $own.tag) }}
{{- end }}
{{- end }}

{{/*
The registry Secrets the operator copies into tenant namespaces for the runner,
comma-separated: only those backup.imagePullSecrets names. Never the operator's own
imagePullSecrets: tenant admins read the copies, and the operator's credential is often
the whole organisation's.
*/}}
{{- define "cleo-operator.backupPullSecrets" -}}
{{- $names := list }}
{{- range .Values.backup.imagePullSecrets }}
{{- $names = append $names .name }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/*
The site configuration the data layer parses ({sites: {...}}), with each adminSecret's
namespace defaulting to the release's. Cross-field rules a JSON schema cannot state are
checked here and fail the render with the value's path.
*/}}
{{- define "cleo-operator.sitesConfig" -}}
{{- $sites := dict }}
{{- range $name, $site := .Values.sites }}
{{- if and $site.standby (not (hasKey $.Values.sites $site.standby)) }}
{{- fail (printf "sites.%s.standby: names site %q, which is not defined in sites; defined: %s" $name $site.standby (keys $.Values.sites | sortAlpha | join ", ")) }}
{{- end }}
{{- if eq (toString $site.standby) $name }}
{{- fail (printf "sites.%s.standby: a site cannot be its own standby" $name) }}
{{- end }}
{{- $poolMin := 0 }}
{{- $poolMax := 4 }}
{{- if $site.pool }}
{{- $poolMin = int (default 0 $site.pool.minSize) }}
{{- $poolMax = int (default (max 4 $poolMin) $site.pool.maxSize) }}
{{- end }}
{{- if lt $poolMax $poolMin }}
{{- fail (printf "sites.%s.pool.maxSize: %d is less than minSize %d; raise maxSize" $name $poolMax $poolMin) }}
{{- end }}
{{- $secret := dict "name" $site.adminSecret.name "namespace" (default $.Release.Namespace $site.adminSecret.namespace) }}
{{- $_ := set $sites $name (merge (dict "adminSecret" $secret) (omit $site "adminSecret")) }}
{{- end }}
{{- dict "sites" $sites | toYaml }}
{{- end }}

{{/*
The ports of the PostgreSQL sites (for the NetworkPolicy), 5432 where a site sets none.
*/}}
{{- define "cleo-operator.sitePorts" -}}
{{- $ports := list }}
{{- range $name, $site := .Values.sites }}
{{- $ports = append $ports (int (default 5432 $site.port)) }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}

{{- define "cleo-operator.kekEnabled" -}}
{{- if or .Values.kek.secretName .Values.kek.volume }}true{{ end }}
{{- end }}
