# deploy/local/lib.sh — settings and helpers shared by deploy/local/up, down, test and demo.
# Sourced, never run. Every setting can be overridden through the environment.

LOCAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEPLOY_DIR="$LOCAL_ROOT/deploy/local"

# Where downloads, broker data, registry files, pid files and logs go (git-ignored).
LOCAL_CACHE_DIR="${LOCAL_CACHE_DIR:-$LOCAL_ROOT/.cache}"

# Loopback only: nothing here listens on another address.
LOCAL_HOST="${LOCAL_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-8091}"

# Versions fetched from Maven Central. The registry's version is chosen by deploy/local/up when
# APICURIO_VERSION is unset: 3.3.3 when a JDK 21+ is found, else 2.6.13.Final (runs on Java 17).
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
APICURIO_VERSION="${APICURIO_VERSION:-}"
APICURIO_DEFAULT_VERSION="3.3.3"
APICURIO_JAVA17_VERSION="2.6.13.Final"

# Compatibility level set on the registry at every start (Apicurio enforces none by default).
REGISTRY_COMPATIBILITY="${REGISTRY_COMPATIBILITY:-BACKWARD_TRANSITIVE}"

# JVM sizes: the machine has 2 cores and is shared with compilers; leave memory to the page cache.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"
REGISTRY_HEAP_OPTS="${REGISTRY_HEAP_OPTS:--Xms128m -Xmx512m}"

# How long to wait for each service to become ready.
KAFKA_START_TIMEOUT_S="${KAFKA_START_TIMEOUT_S:-180}"
REGISTRY_START_TIMEOUT_S="${REGISTRY_START_TIMEOUT_S:-240}"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA_BIN="${JAVA_BIN:-$JAVA_HOME/bin/java}"
else
    JAVA_BIN="${JAVA_BIN:-java}"
fi

# Major version of a java binary (e.g. 17), or nothing.
java_major() {
    "$1" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -n1
}

# Apicurio Registry 3.x needs Java 21+. Picks REGISTRY_JAVA_HOME, else JAVA_HOME or the newest
# JDK under $JVM_DIR (default /usr/lib/jvm) that is 21+, and prints its java binary; prints nothing if none is.
find_registry_java() {
    local candidate major best="" best_major=0
    if [[ -n "${REGISTRY_JAVA_HOME:-}" ]]; then
        printf '%s\n' "$REGISTRY_JAVA_HOME/bin/java"
        return 0
    fi
    for candidate in "$JAVA_BIN" "${JVM_DIR:-/usr/lib/jvm}"/*/bin/java; do
        [[ -x "$candidate" ]] || command -v "$candidate" >/dev/null 2>&1 || continue
        major="$(java_major "$candidate")"
        if [[ -n "$major" && "$major" -ge 21 && "$major" -gt "$best_major" ]]; then
            best="$candidate"
            best_major="$major"
        fi
    done
    [[ -n "$best" ]] && printf '%s\n' "$best"
    return 0
}

KAFKA_HOME="$LOCAL_CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA_DIR="$LOCAL_CACHE_DIR/data/kafka"
RUN_DIR="$LOCAL_CACHE_DIR/run"
LOG_DIR="$LOCAL_CACHE_DIR/logs"
M2_REPO="$LOCAL_CACHE_DIR/m2"

KAFKA_PID_FILE="$RUN_DIR/kafka.pid"
REGISTRY_PID_FILE="$RUN_DIR/registry.pid"
S3_PID_FILE="$RUN_DIR/s3.pid"
AZURE_PID_FILE="$RUN_DIR/azurite.pid"

KAFKA_BOOTSTRAP="$LOCAL_HOST:$KAFKA_PORT"
REGISTRY_BASE_URL="http://$LOCAL_HOST:$REGISTRY_PORT"
REGISTRY_CCOMPAT_URL="$REGISTRY_BASE_URL/apis/ccompat/v7"

log() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] error: %s\n' "$*" >&2; exit 1; }

# Prints the pid in a pid file if that process is alive and is ours (its command line names
# the marker we started it with), else nothing. A stale pid never matches another program.
live_pid() {
    local pid_file="$1" marker="$2" pid
    [[ -f "$pid_file" ]] || return 0
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    [[ -r "/proc/$pid/cmdline" ]] || return 0
    # Arguments end with a space here, so /tmp/x never matches a process started for /tmp/x2.
    if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker "; then
        printf '%s\n' "$pid"
    fi
}

# The markers: each JVM is started with a system property naming this cache folder.
kafka_marker() { printf '%s' "-Dlocal.infra.kafka=$LOCAL_CACHE_DIR"; }
registry_marker() { printf '%s' "-Dlocal.infra.registry=$LOCAL_CACHE_DIR"; }

# True when something accepts TCP connections on host:port.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Prints the last lines of a log file to stderr, to explain a failed start.
show_tail() {
    local file="$1"
    if [[ -f "$file" ]]; then
        printf '[local] ---- last 60 lines of %s ----\n' "$file" >&2
        tail -n 60 "$file" >&2
        printf '[local] ---- end of %s ----\n' "$file" >&2
    else
        printf '[local] (no log at %s)\n' "$file" >&2
    fi
}

# The Python packages of the tests and the demo: fastavro, confluent-kafka (consumers/python's
# requirements), deltalake and pyarrow (reading the lake sink's tables), PyYAML (the secured
# broker's setup reads the Strimzi resources). When python3 lacks one,
# pip installs them all into the ignored cache ($LOCAL_CACHE_DIR/python: no system or user site
# is touched) and PYTHONPATH is exported pointing there.
PYTHON_PACKAGES_CHECK='import fastavro, confluent_kafka.schema_registry.avro, deltalake, pyarrow, yaml'
ensure_python_packages() {
    python3 -c "$PYTHON_PACKAGES_CHECK" 2>/dev/null && return 0
    local target="$LOCAL_CACHE_DIR/python"
    if ! PYTHONPATH="$target" python3 -c "$PYTHON_PACKAGES_CHECK" 2>/dev/null; then
        log "installing fastavro, confluent-kafka, deltalake, pyarrow and pyyaml into $target (pip)"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
            --target "$target" fastavro pyyaml -r "$LOCAL_ROOT/consumers/python/requirements.txt" \
            -r "$LOCAL_ROOT/consumers/lake-sink/scripts/requirements.txt" \
            || die "pip could not install the Python packages: install python3-pip"
    fi
    export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
}

# Starts `command...` in the background as service `name` (its pid in pid_file, its output in
# log_file) and waits up to 60 s for it to accept connections on port; stops it and dies with
# the log's tail if it does not, or if it exits first. For the object stores of the lake sink's
# tests.
start_background() {
    local name="$1" pid_file="$2" port="$3" log_file="$4"
    shift 4
    port_open "$LOCAL_HOST" "$port" \
        && die "port $port is taken by another program: $name cannot start there"
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    nohup "$@" >"$log_file" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pid_file"
    local deadline=$((SECONDS + 60))
    until port_open "$LOCAL_HOST" "$port"; do
        # Alive by pid, not by marker: until the child has exec'd, its command line is still
        # this shell's.
        if ((SECONDS >= deadline)) || ! kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            show_tail "$log_file"
            die "$name did not start on port $port"
        fi
        sleep 0.2
    done
    log "$name ready on $LOCAL_HOST:$port (pid $(cat "$pid_file"))"
}

# The S3-compatible object store of the lake sink's s3:// test (consumers/lake-sink/tests/lake.rs):
# moto's server, pip-installed into the ignored cache ($LOCAL_CACHE_DIR/python-moto, apart from
# the other packages: it brings boto3 and Flask), on S3_PORT (default 9311), with the bucket
# `lake-tests`. It answers put-if-absent (If-None-Match: *) as AWS S3 does, which Delta commits
# rely on. Keeps objects in memory only; deploy/local/down stops it.
S3_PORT="${S3_PORT:-9311}"
S3_ENDPOINT="http://$LOCAL_HOST:$S3_PORT"
S3_HOME="$LOCAL_CACHE_DIR/python-moto"
s3_marker() { printf '%s' "$S3_HOME/bin/moto_server"; }

# Starts the store (or finds it running) at $S3_ENDPOINT; dies if it cannot. Run through
# deploy/local/stores, which prints the tests' variable.
start_s3() {
    if [[ -z "$(live_pid "$S3_PID_FILE" "$(s3_marker)")" ]]; then
        if [[ ! -f "$(s3_marker)" ]]; then
            log "installing moto[server] (an S3-compatible store for the lake sink's s3:// test) into $S3_HOME (pip)"
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
                --no-warn-conflicts --target "$S3_HOME" "moto[server]>=5.1,<6" \
                || die "pip could not install moto[server]: install python3-pip"
        fi
        PYTHONPATH="$S3_HOME" start_background "the S3-compatible store (moto; S3_PORT)" \
            "$S3_PID_FILE" "$S3_PORT" "$LOG_DIR/s3.log" \
            python3 "$(s3_marker)" -H "$LOCAL_HOST" -p "$S3_PORT"
    fi
    curl -fsS -o /dev/null -X PUT "$S3_ENDPOINT/lake-tests" \
        || die "could not create the bucket lake-tests at $S3_ENDPOINT"
}

# The Azure Storage emulator of the lake sink's az:// test: Azurite's blob service, npm-installed
# into the ignored cache ($LOCAL_CACHE_DIR/azurite), on AZURE_BLOB_PORT (default 10000), with the
# container `lake-tests` of its development account. It answers put-if-absent (If-None-Match: *)
# as Azure does. Keeps its blobs under $LOCAL_CACHE_DIR/data/azurite; deploy/local/down stops it.
AZURE_BLOB_PORT="${AZURE_BLOB_PORT:-10000}"
AZURE_ENDPOINT="http://$LOCAL_HOST:$AZURE_BLOB_PORT"
AZURE_HOME="$LOCAL_CACHE_DIR/azurite"
azure_marker() { printf '%s' "$AZURE_HOME/node_modules/azurite/dist/src/blob/main.js"; }

# Starts the emulator (or finds it running) at $AZURE_ENDPOINT; dies if it cannot. Run through
# deploy/local/stores, which prints the tests' variable.
start_azure() {
    if [[ -z "$(live_pid "$AZURE_PID_FILE" "$(azure_marker)")" ]]; then
        command -v node >/dev/null 2>&1 || die "node is not installed: the az:// test's emulator (Azurite) needs Node.js 18 or later"
        if [[ ! -f "$(azure_marker)" ]]; then
            log "installing azurite (the Azure Storage emulator of the lake sink's az:// test) into $AZURE_HOME (npm)"
            mkdir -p "$AZURE_HOME"
            npm install --silent --no-audit --no-fund --prefix "$AZURE_HOME" "azurite@3" >&2 \
                || die "npm could not install azurite"
        fi
        mkdir -p "$LOCAL_CACHE_DIR/data/azurite"
        start_background "the Azure Storage emulator (Azurite; AZURE_BLOB_PORT)" \
            "$AZURE_PID_FILE" "$AZURE_BLOB_PORT" "$LOG_DIR/azurite.log" \
            node "$(azure_marker)" --blobHost "$LOCAL_HOST" --blobPort "$AZURE_BLOB_PORT" \
            --location "$LOCAL_CACHE_DIR/data/azurite" --skipApiVersionCheck --disableTelemetry \
            --silent
    fi
    python3 "$LOCAL_ROOT/deploy/local/azure-container.py" "$AZURE_ENDPOINT" lake-tests \
        || die "could not create the container lake-tests at $AZURE_ENDPOINT"
}
