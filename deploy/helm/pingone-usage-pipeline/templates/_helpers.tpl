{{/*
Helpers of the pingone-usage-pipeline chart: names and labels, the three components' fixed
facts, images, the TOML renderer, each component's configuration (values merged over what the
chart derives, then checked) and the environment that carries secrets.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "pingone-usage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart> (or the release name if it contains the chart name), or fullnameOverride. */}}
{{- define "pingone-usage.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "pingone-usage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "pingone-usage.labels" -}}
helm.sh/chart: {{ include "pingone-usage.chart" . }}
app.kubernetes.io/name: {{ include "pingone-usage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pingone-usage-pipeline
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The fixed facts of each component, by its values key: the name suffix, the binary (and image
entrypoint), the environment-override prefix and the in-pod configuration path.
*/}}
{{- define "pingone-usage.components" -}}
producer:
  suffix: producer
  binary: producer
  envPrefix: PRODUCER
transformer:
  suffix: transformer
  binary: transformer
  envPrefix: TRANSFORMER
lakeSink:
  suffix: lake-sink
  binary: lake-sink
  envPrefix: LAKE_SINK
{{- end -}}

{{/* The values keys of the components, in order. */}}
{{- define "pingone-usage.componentKeys" -}}
producer transformer lakeSink
{{- end -}}

{{/* Where each pod finds its configuration, the Kafka and registry CAs and the tenants' client
secrets. */}}
{{- define "pingone-usage.configPath" -}}/etc/pingone-usage/config.toml{{- end -}}
{{- define "pingone-usage.caDir" -}}/etc/pingone-usage/kafka-ca{{- end -}}
{{- define "pingone-usage.registryCaDir" -}}/etc/pingone-usage/registry-ca{{- end -}}

{{/*
A volume holding one CA certificate: (dict "name" <volume name> "ca" <kafka.ca or
schemaRegistry.ca>), from its Secret or else its ConfigMap, the certificate at its key.
*/}}
{{- define "pingone-usage.caVolume" -}}
- name: {{ .name }}
  {{- if .ca.secretName }}
  secret:
    secretName: {{ .ca.secretName }}
  {{- else }}
  configMap:
    name: {{ .ca.configMapName }}
  {{- end }}
    items:
      - key: {{ .ca.key }}
        path: {{ .ca.key }}
{{- end -}}
{{- define "pingone-usage.tenantSecretsDir" -}}/etc/pingone-usage/tenant-secrets{{- end -}}

{{/*
A component's context: (dict "root" $ "key" "producer"). Everything below that is per component
takes it.
*/}}

{{/* <fullname>-<suffix>. */}}
{{- define "pingone-usage.componentName" -}}
{{- $meta := index (fromYaml (include "pingone-usage.components" .root)) .key -}}
{{- printf "%s-%s" (include "pingone-usage.fullname" .root | trunc (int (sub 62 (len $meta.suffix))) | trimSuffix "-") $meta.suffix -}}
{{- end -}}

{{/* Selector labels of a component's pods. */}}
{{- define "pingone-usage.selectorLabels" -}}
{{- $meta := index (fromYaml (include "pingone-usage.components" .root)) .key -}}
app.kubernetes.io/name: {{ include "pingone-usage.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ $meta.suffix }}
{{- end -}}

{{/* Labels of a component's resources. */}}
{{- define "pingone-usage.componentLabels" -}}
{{ include "pingone-usage.labels" .root }}
app.kubernetes.io/component: {{ (index (fromYaml (include "pingone-usage.components" .root)) .key).suffix }}
{{- end -}}

{{/* The ServiceAccount a component's pods run as. */}}
{{- define "pingone-usage.serviceAccountName" -}}
{{- $sa := (index .root.Values .key).serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "pingone-usage.componentName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* [<registry>/]<repository>[:<tag>][@<digest>] of a component. */}}
{{- define "pingone-usage.image" -}}
{{- $v := .root.Values -}}
{{- $image := (index $v .key).image -}}
{{- $repo := $image.repository -}}
{{- with $v.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- $tag := $image.tag | default $v.image.tag | default .root.Chart.AppVersion | toString -}}
{{- if $image.digest -}}
{{- printf "%s:%s@%s" $repo $tag $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
TOML. Helm's toToml writes every number of a values file as a float (`30000.0`), which the
binaries' integer fields refuse, so the chart renders TOML itself: whole numbers as integers,
strings as JSON strings (a valid TOML basic string), keys bare when they can be, sub-tables and
arrays of tables after a table's own keys; null values and empty tables are left out.
*/}}

{{- define "pingone-usage.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end -}}
{{- end -}}

{{- define "pingone-usage.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- $all := true -}}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end -}}
{{- if $all }}true{{ end -}}
{{- end -}}
{{- end -}}

{{- define "pingone-usage.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}{{ toJson $v }}
{{- else if kindIs "bool" $v -}}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 $v) (floor $v) }}{{ printf "%.0f" (float64 $v) }}{{ else }}{{ $v }}{{ end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}{{ printf "%d" $v }}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "pingone-usage.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}
{ {{- $first := true -}}{{ range $k, $e := $v }}{{ if not (kindIs "invalid" $e) }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ include "pingone-usage.toml.key" $k }} = {{ include "pingone-usage.toml.value" $e }}{{ end }}{{ end -}} }
{{- else -}}
{{- fail (printf "cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* (dict "table" $map "path" "kafka"): the key-values of a table, then its sub-tables. */}}
{{- define "pingone-usage.toml.table" -}}
{{- $path := .path -}}
{{- range $k, $v := .table -}}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "pingone-usage.toml.isTableArray" $v)) }}
{{ include "pingone-usage.toml.key" $k }} = {{ include "pingone-usage.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k, $v := .table -}}
{{- $p := include "pingone-usage.toml.key" $k -}}
{{- if $path }}{{ $p = printf "%s.%s" $path $p }}{{ end -}}
{{- if and (kindIs "map" $v) (gt (len $v) 0) }}

[{{ $p }}]
{{- include "pingone-usage.toml.table" (dict "table" $v "path" $p) -}}
{{- else if include "pingone-usage.toml.isTableArray" $v -}}
{{- range $v }}

[[{{ $p }}]]
{{- include "pingone-usage.toml.table" (dict "table" . "path" $p) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------------------------------
Configuration. "pingone-usage.config" returns a component's final configuration as YAML (parse
it with fromYaml), failing the render with a message naming the value when something is wrong.
*/}}

{{/* The Secret reference that carries the registry password of a component, or an empty map. */}}
{{- define "pingone-usage.registryPasswordSecret" -}}
{{- $c := index .root.Values .key -}}
{{- $ref := $c.schemaRegistryPasswordSecret | default dict -}}
{{- if not $ref.name }}{{ $ref = .root.Values.schemaRegistry.passwordSecret | default dict }}{{ end -}}
{{- if $ref.name }}{{ toYaml $ref }}{{ end -}}
{{- end -}}

{{- define "pingone-usage.config" -}}
{{- $root := .root -}}
{{- $key := .key -}}
{{- $v := $root.Values -}}
{{- $c := index $v $key -}}
{{- $user := deepCopy ($c.config | default dict) -}}
{{- /* What the chart derives from the shared values and the component's credentials. */ -}}
{{- $options := deepCopy ($v.kafka.librdkafkaOptions | default dict) -}}
{{- if or $v.kafka.ca.secretName $v.kafka.ca.configMapName -}}
{{- if not $v.kafka.ca.key }}{{ fail "kafka.ca.key: the key of the CA certificate is empty" }}{{ end -}}
{{- if not (hasKey $options "ssl.ca.location") -}}
{{- $_ := set $options "ssl.ca.location" (printf "%s/%s" (include "pingone-usage.caDir" $root) $v.kafka.ca.key) -}}
{{- end -}}
{{- end -}}
{{- $creds := $c.kafkaCredentials | default dict -}}
{{- with $creds.username }}{{ $_ := set $options "sasl.username" . }}{{ end -}}
{{- with $creds.oauthClientId }}{{ $_ := set $options "sasl.oauthbearer.client.id" . }}{{ end -}}
{{- $kafka := dict "librdkafka_options" $options -}}
{{- with $v.kafka.bootstrapServers }}{{ $_ := set $kafka "bootstrap_servers" . }}{{ end -}}
{{- $registry := dict -}}
{{- with $v.schemaRegistry.url }}{{ $_ := set $registry "url" . }}{{ end -}}
{{- with $v.schemaRegistry.username }}{{ $_ := set $registry "username" . }}{{ end -}}
{{- if include "pingone-usage.registryPasswordSecret" . -}}
{{- $_ := set $registry "password_env" "SCHEMA_REGISTRY_PASSWORD" -}}
{{- end -}}
{{- if or $v.schemaRegistry.ca.secretName $v.schemaRegistry.ca.configMapName -}}
{{- if not $v.schemaRegistry.ca.key }}{{ fail "schemaRegistry.ca.key: the key of the CA certificate is empty" }}{{ end -}}
{{- $_ := set $registry "ca_location" (printf "%s/%s" (include "pingone-usage.registryCaDir" $root) $v.schemaRegistry.ca.key) -}}
{{- end -}}
{{- $ops := dict "log_format" "json" -}}
{{- $base := dict "kafka" $kafka "schema_registry" $registry "operations" $ops -}}
{{- /* The component's own config wins; the listen address is the chart's. */ -}}
{{- if hasKey ($user.operations | default dict) "listen_addr" -}}
{{- fail (printf "%s.config.operations.listen_addr: the chart sets it to 0.0.0.0:<port>; set %s.port instead" $key $key) -}}
{{- end -}}
{{- $cfg := mergeOverwrite $base $user -}}
{{- $_ := set $cfg.operations "listen_addr" (printf "0.0.0.0:%d" (int $c.port)) -}}
{{- if not $cfg.kafka.bootstrap_servers -}}
{{- fail (printf "kafka.bootstrapServers (or %s.config.kafka.bootstrap_servers) is required" $key) -}}
{{- end -}}
{{- if not $cfg.schema_registry.url -}}
{{- fail (printf "schemaRegistry.url (or %s.config.schema_registry.url) is required" $key) -}}
{{- end -}}
{{- /* librdkafka options are strings to the binaries: a number or boolean of a values file is
       written as its text (a YAML 10000 would otherwise be a TOML integer they refuse). */ -}}
{{- $strings := dict -}}
{{- range $opt, $value := ($cfg.kafka.librdkafka_options | default dict) -}}
{{- $_ := set $strings $opt (include "pingone-usage.optionText" $value) -}}
{{- end -}}
{{- $_ := set $cfg.kafka "librdkafka_options" $strings -}}
{{- /* Reserved keys and secrets are refused. */ -}}
{{- range $opt, $_ := $cfg.kafka.librdkafka_options -}}
{{- if has $opt (list "bootstrap.servers" "transactional.id" "enable.idempotence" "isolation.level" "group.id" "enable.auto.commit" "message.max.bytes") -}}
{{- fail (printf "librdkafka option %q (kafka.librdkafkaOptions or %s.config.kafka.librdkafka_options) is set by the binary and may not be overridden" $opt $key) -}}
{{- end -}}
{{- if or (regexMatch "(^|\\.)(password|secret)$" $opt) (has $opt (list "sasl.jaas.config" "ssl.key.pem")) -}}
{{- fail (printf "librdkafka option %q is a secret: it may not be in values (kafka.librdkafkaOptions or %s.config); use %s.kafkaCredentials (passwordSecret, oauthClientSecret or secretOptions) to read it from a Secret" $opt $key $key) -}}
{{- end -}}
{{- end -}}
{{- /* Each component's own part. */ -}}
{{- if eq $key "producer" -}}
{{- $source := $cfg.kafka.tenant_source | default "file" -}}
{{- $tenants := $cfg.tenants | default list -}}
{{- if eq $source "file" -}}
{{- if ne (int $c.replicas) 1 -}}
{{- fail (printf "producer.replicas is %d but producer.config.kafka.tenant_source is \"file\": only one producer may run a file's tenants (each would run all of them). Use 1 replica, or tenant_source \"topic\" to share tenants between instances" (int $c.replicas)) -}}
{{- end -}}
{{- if not $tenants -}}
{{- fail "producer.config.kafka.tenant_source is \"file\" but producer.config.tenants is empty: list the tenants, or use tenant_source \"topic\" and register them with `producer tenants add`" -}}
{{- end -}}
{{- else if eq $source "topic" -}}
{{- if $tenants -}}
{{- fail "producer.config.tenants is set but producer.config.kafka.tenant_source is \"topic\": register them with `producer tenants add` instead (the file then has no tenants)" -}}
{{- end -}}
{{- else -}}
{{- fail (printf "producer.config.kafka.tenant_source is %q: \"file\" or \"topic\"" $source) -}}
{{- end -}}
{{- if $c.tenantSecrets.secretName -}}
{{- $filled := list -}}
{{- range $tenants -}}
{{- $t := deepCopy . -}}
{{- if not (or (hasKey $t "client_secret_file") (hasKey $t "client_secret_env")) -}}
{{- $_ := set $t "client_secret_file" (printf "%s/%s" (include "pingone-usage.tenantSecretsDir" $root) (toString $t.tenant_id)) -}}
{{- end -}}
{{- $filled = append $filled $t -}}
{{- end -}}
{{- if $tenants }}{{ $_ := set $cfg "tenants" $filled }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if eq $key "lakeSink" -}}
{{- $lake := $cfg.lake | default dict -}}
{{- $persistence := $c.persistence -}}
{{- $location := $lake.location | default "" -}}
{{- if and (not $location) $persistence.enabled -}}
{{- $location = $persistence.mountPath -}}
{{- end -}}
{{- if not $location -}}
{{- fail "lakeSink: set lakeSink.config.lake.location (s3://…, gs://…, az://…) or enable lakeSink.persistence for a directory" -}}
{{- end -}}
{{- $remote := regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $location -}}
{{- if and $remote $persistence.enabled -}}
{{- fail (printf "lakeSink.persistence.enabled is true but lakeSink.config.lake.location is %s: set persistence.enabled false for object storage" $location) -}}
{{- end -}}
{{- if and (not $remote) (not $persistence.enabled) (not $c.extraVolumeMounts) -}}
{{- fail (printf "lakeSink.config.lake.location is the directory %s but nothing is mounted for it: enable lakeSink.persistence (or mount a volume with extraVolumes/extraVolumeMounts), or use s3://, gs://, az://" $location) -}}
{{- end -}}
{{- if and (not $remote) $persistence.enabled (not $persistence.existingClaim) (gt (int $c.replicas) 1) (not (has "ReadWriteMany" $persistence.accessModes)) -}}
{{- fail (printf "lakeSink.replicas is %d with a local lake location on a %s claim: several sinks need lakeSink.persistence.accessModes [ReadWriteMany] or object storage (s3://, gs://, az://)" (int $c.replicas) (join "," $persistence.accessModes)) -}}
{{- end -}}
{{- $_ := set $lake "location" $location -}}
{{- $storage := dict -}}
{{- range $opt, $value := ($lake.storage_options | default dict) -}}
{{- $_ := set $storage $opt (include "pingone-usage.optionText" $value) -}}
{{- end -}}
{{- $_ := set $lake "storage_options" $storage -}}
{{- $_ := set $cfg "lake" $lake -}}
{{- range $opt, $_ := ($lake.storage_options | default dict) -}}
{{- if regexMatch "(?i)(secret|password|_key$|token$)" $opt -}}
{{- fail (printf "lakeSink.config.lake.storage_options.%s is a credential: it may not be in values; pass it from a Secret with lakeSink.envFrom (e.g. AWS_SECRET_ACCESS_KEY) or workload identity" $opt) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* The pods must outlive the binaries' shutdown deadline. */ -}}
{{- $deadline := int ($cfg.operations.shutdown_deadline_ms | default 15000) -}}
{{- if lt (mul (int $c.terminationGracePeriodSeconds) 1000) (add $deadline 5000) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed operations.shutdown_deadline_ms (%d ms) by at least 5 s" $key (int $c.terminationGracePeriodSeconds) $deadline) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* A librdkafka or object_store option's value as the string the binaries take. */}}
{{- define "pingone-usage.optionText" -}}
{{- if kindIs "string" . -}}{{ . }}
{{- else if kindIs "invalid" . -}}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (floor .) }}{{ printf "%.0f" (float64 .) }}{{ else }}{{ . }}{{ end -}}
{{- else -}}{{ toString . }}
{{- end -}}
{{- end -}}

{{/* A component's config.toml. */}}
{{- define "pingone-usage.configToml" -}}
# Rendered by the pingone-usage-pipeline chart from the values of {{ .key }} (see values.yaml).
{{- include "pingone-usage.toml.table" (dict "table" (fromYaml (include "pingone-usage.config" .)) "path" "") }}
{{ end -}}

{{/* ------------------------------------------------------------------------------------------
The container's environment: secrets from Secrets, the log level, extraEnv.
*/}}
{{- define "pingone-usage.env" -}}
{{- $root := .root -}}
{{- $key := .key -}}
{{- $c := index $root.Values $key -}}
{{- $prefix := (index (fromYaml (include "pingone-usage.components" $root)) $key).envPrefix -}}
{{- $secretOptions := dict -}}
{{- $creds := $c.kafkaCredentials | default dict -}}
{{- if and $creds.passwordSecret $creds.passwordSecret.name -}}
{{- $_ := set $secretOptions "sasl.password" $creds.passwordSecret -}}
{{- end -}}
{{- if and $creds.oauthClientSecret $creds.oauthClientSecret.name -}}
{{- $_ := set $secretOptions "sasl.oauthbearer.client.secret" $creds.oauthClientSecret -}}
{{- end -}}
{{- range $opt, $ref := ($creds.secretOptions | default dict) -}}
{{- if not (and $ref.name $ref.key) -}}
{{- fail (printf "%s.kafkaCredentials.secretOptions.%s needs a Secret name and key" $key $opt) -}}
{{- end -}}
{{- $_ := set $secretOptions $opt $ref -}}
{{- end -}}
{{- range $opt, $ref := $secretOptions }}
- name: {{ printf "%s__KAFKA__LIBRDKAFKA_OPTIONS__%s" $prefix $opt | quote }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "%s: the Secret of librdkafka option %s needs a name" $key $opt) $ref.name | quote }}
      key: {{ required (printf "%s: the Secret of librdkafka option %s needs a key" $key $opt) $ref.key | quote }}
{{- end }}
{{- with include "pingone-usage.registryPasswordSecret" . | fromYaml }}
- name: SCHEMA_REGISTRY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ required (printf "%s: the registry password Secret needs a key" $key) .key | quote }}
{{- end }}
{{- with $c.logLevel }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- range $c.extraEnv }}
{{- if and (hasKey . "value") (regexMatch "(?i)(password|passwd|secret|token|_key|jaas\\.config|key\\.pem)$" (toString .name)) }}
{{- fail (printf "%s.extraEnv: %s looks like a secret and has a literal value; use valueFrom.secretKeyRef (or envFrom) so it stays in a Secret" $key .name) }}
{{- end }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- end -}}
