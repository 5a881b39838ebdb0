# deploy/local/secured.sh — the opt-in secured broker of `deploy/local/up --secured`: a second
# single-node Kafka beside the plain one, reachable only over SASL_SSL, with StandardAuthorizer
# and exactly the ACLs of the chart's Strimzi KafkaUser resources. Sourced by up and down after
# lib.sh, never run.
#
# What it makes, under $SECURED_DIR (git-ignored, kept across restarts, removed by down --purge):
# - tls/ca.pem, a CA made here, and tls/broker-keystore.pem, the broker's key and a certificate
#   for 127.0.0.1 and localhost signed by it (openssl);
# - secrets/<user>: a random password per SCRAM-SHA-512 user, mode 600: admin (the operator,
#   a super user) and each KafkaUser of kafka-users.yaml, all created at storage format time.
# Then the KafkaTopic list's topics and the users' ACLs are applied by secured_setup.py as admin.

SECURED_KAFKA_PORT="${SECURED_KAFKA_PORT:-9192}"
SECURED_CONTROLLER_PORT="${SECURED_CONTROLLER_PORT:-9193}"
SECURED_DIR="$LOCAL_CACHE_DIR/secured"
SECURED_TLS_DIR="$SECURED_DIR/tls"
SECURED_SECRETS_DIR="$SECURED_DIR/secrets"
SECURED_DATA_DIR="$LOCAL_CACHE_DIR/data/kafka-secured"
SECURED_LOG_DIR="$LOG_DIR/secured"
SECURED_PID_FILE="$RUN_DIR/kafka-secured.pid"
SECURED_BOOTSTRAP="$LOCAL_HOST:$SECURED_KAFKA_PORT"
STRIMZI_DIR="$LOCAL_ROOT/deploy/helm/pingone-usage-pipeline/files/strimzi"

secured_marker() { printf '%s' "-Dlocal.infra.kafka-secured=$LOCAL_CACHE_DIR"; }

# The KafkaUser names of the Strimzi file, one per line.
secured_users() {
    python3 -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d: print(d["metadata"]["name"])' "$STRIMZI_DIR/kafka-users.yaml"
}

# The CA, the broker's certificate and the users' passwords, made once.
secured_credentials() {
    command -v openssl >/dev/null 2>&1 || die "openssl not found: apt-get install openssl"
    mkdir -p "$SECURED_TLS_DIR" "$SECURED_SECRETS_DIR"
    chmod 700 "$SECURED_DIR" "$SECURED_SECRETS_DIR"
    local tls="$SECURED_TLS_DIR" out="$SECURED_LOG_DIR/openssl.log"
    if [[ ! -s "$tls/broker-keystore.pem" ]]; then
        log "secured broker: making a CA and the broker's certificate in $tls"
        {
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pingone-usage local CA" \
                -keyout "$tls/ca.key" -out "$tls/ca.pem" \
                && openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
                    -keyout "$tls/broker.key" -out "$tls/broker.csr" \
                && openssl x509 -req -days 3650 -in "$tls/broker.csr" -CA "$tls/ca.pem" \
                    -CAkey "$tls/ca.key" -CAcreateserial -out "$tls/broker.pem" \
                    -extfile <(printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
                        "basicConstraints=CA:FALSE" "extendedKeyUsage=serverAuth")
        } >"$out" 2>&1 || { show_tail "$out"; die "openssl could not make the secured broker's certificates"; }
        cat "$tls/broker.key" "$tls/broker.pem" >"$tls/broker-keystore.pem"
        chmod 600 "$tls/ca.key" "$tls/broker.key" "$tls/broker-keystore.pem"
    fi
    local user
    for user in admin $(secured_users); do
        if [[ ! -s "$SECURED_SECRETS_DIR/$user" ]]; then
            (umask 077 && openssl rand -hex 24 >"$SECURED_SECRETS_DIR/$user")
            # A user added after the storage was formatted has no SCRAM credential there.
            rm -rf "$SECURED_DATA_DIR"
        fi
    done
}

start_secured_kafka() {
    mkdir -p "$SECURED_LOG_DIR"
    local pid
    pid="$(live_pid "$SECURED_PID_FILE" "$(secured_marker)")"
    if [[ -n "$pid" ]]; then
        log "secured kafka already running (pid $pid) on $SECURED_BOOTSTRAP"
        wait_secured_kafka "$pid"
        return 0
    fi
    for port in "$SECURED_KAFKA_PORT" "$SECURED_CONTROLLER_PORT"; do
        port_open "$LOCAL_HOST" "$port" \
            && die "port $LOCAL_HOST:$port is taken by another process: stop it or set SECURED_KAFKA_PORT / SECURED_CONTROLLER_PORT"
    done
    secured_credentials
    local config="$RUN_DIR/secured.properties" admin_password
    admin_password="$(cat "$SECURED_SECRETS_DIR/admin")"
    (umask 077 && sed -e "s|@KAFKA_HOST@|$LOCAL_HOST|g" \
        -e "s|@KAFKA_PORT@|$SECURED_KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$SECURED_CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$SECURED_DATA_DIR|g" \
        -e "s|@TLS_DIR@|$SECURED_TLS_DIR|g" \
        -e "s|@ADMIN_PASSWORD@|$admin_password|g" \
        "$DEPLOY_DIR/secured.properties.template" >"$config")
    local common_opts=(
        "-Dlog4j2.configurationFile=$DEPLOY_DIR/log4j2.properties"
        "-Dkafka.logs.dir=$SECURED_LOG_DIR"
        -Djava.awt.headless=true
    )
    if [[ ! -f "$SECURED_DATA_DIR/meta.properties" ]]; then
        local cluster_id scram=() user
        cluster_id="$("$JAVA_BIN" "${common_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>>"$SECURED_LOG_DIR/kafka-storage.log" | tail -n1)"
        [[ -n "$cluster_id" ]] || { show_tail "$SECURED_LOG_DIR/kafka-storage.log"; die "could not make a kafka cluster id"; }
        for user in admin $(secured_users); do
            scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(cat "$SECURED_SECRETS_DIR/$user")]")
        done
        log "secured broker: formatting storage in $SECURED_DATA_DIR with SCRAM users admin $(secured_users | tr '\n' ' ')"
        mkdir -p "$SECURED_DATA_DIR"
        if ! "$JAVA_BIN" "${common_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
            --standalone -t "$cluster_id" -c "$config" "${scram[@]}" >>"$SECURED_LOG_DIR/kafka-storage.log" 2>&1; then
            show_tail "$SECURED_LOG_DIR/kafka-storage.log"
            die "secured kafka storage format failed"
        fi
    fi
    [[ -f "$SECURED_LOG_DIR/kafka.log" ]] && mv -f "$SECURED_LOG_DIR/kafka.log" "$SECURED_LOG_DIR/kafka.previous.log"
    log "starting the secured kafka on $SECURED_BOOTSTRAP (SASL_SSL, controller $LOCAL_HOST:$SECURED_CONTROLLER_PORT)"
    # shellcheck disable=SC2086 # heap options are a list of words
    setsid nohup "$JAVA_BIN" "$(secured_marker)" $KAFKA_HEAP_OPTS \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError \
        "${common_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$config" \
        </dev/null >"$SECURED_LOG_DIR/kafka.out" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$SECURED_PID_FILE"
    wait_secured_kafka "$pid"
}

wait_secured_kafka() {
    local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        if [[ ! -d "/proc/$pid" ]]; then
            show_tail "$SECURED_LOG_DIR/kafka.out"
            show_tail "$SECURED_LOG_DIR/kafka.log"
            rm -f "$SECURED_PID_FILE"
            die "the secured kafka exited during start (logs: $SECURED_LOG_DIR)"
        fi
        if port_open "$LOCAL_HOST" "$SECURED_KAFKA_PORT" \
            && grep -q 'Kafka Server started' "$SECURED_LOG_DIR/kafka.log" 2>/dev/null; then
            log "secured kafka ready on $SECURED_BOOTSTRAP (pid $pid)"
            return 0
        fi
        sleep 0.5
    done
    show_tail "$SECURED_LOG_DIR/kafka.log"
    die "the secured kafka not ready after ${KAFKA_START_TIMEOUT_S}s (pid $pid still running; stop it with deploy/local/down)"
}

# Topics and ACLs from the Strimzi files, as admin.
secured_setup() {
    local out="$SECURED_LOG_DIR/setup.log"
    if ! python3 "$DEPLOY_DIR/secured_setup.py" "$SECURED_BOOTSTRAP" "$SECURED_TLS_DIR/ca.pem" \
        "$SECURED_SECRETS_DIR/admin" "$STRIMZI_DIR" >"$out" 2>&1; then
        show_tail "$out"
        die "could not create the secured broker's topics and ACLs (log: $out)"
    fi
    log "secured broker: $(tail -n1 "$out")"
}
