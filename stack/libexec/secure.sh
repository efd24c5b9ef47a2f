# The secured stack: sourced by stack/bin/stack when it is given --secure, after its own settings,
# which this file overrides. A second Kafka and Cassandra with ports and state of their own
# (<repo>/.stack/secure/), so that they run beside the plain stack:
#   Kafka: SASL_SSL + SCRAM-SHA-512 for clients, ACLs from stack/secure/acls.txt, nothing allowed
#   without one; Cassandra: TLS with client certificates, password logins, CassandraAuthorizer.
# Made at the first `up --secure`, kept until `reset --secure`: a CA and certificates (openssl, the
# truststore with keytool), random passwords, client configs and .stack/secure/env for the app.
# shellcheck shell=bash disable=SC2034  # the variables are used by stack/bin/stack

# Certificates, passwords, configs and logs are for this user alone.
umask 077

SECURE_HOME="$STACK_HOME/secure"            # templates and acls.txt (committed)
STATE_HOME="$REPO_HOME/.stack/secure"       # what is made at runtime (gitignored with .stack/)
CERTS_HOME="$STATE_HOME/certs"
PASSWORDS_FILE="$STATE_HOME/passwords"
ACLS_FILE="$SECURE_HOME/acls.txt"

kafka_port=19092            # its controller on 19093
cassandra_port=19042
cassandra_storage_port=17000
cassandra_ssl_storage_port=17001
cassandra_jmx_port=17199
# The default superuser `cassandra` is created at once instead of 10 s after startup, so the
# first `up` can replace it sooner.
CASSANDRA_JVM_EXTRA=(-Dcassandra.superuser_setup_delay_ms=0)

# Every password the stack makes: NAME_PASSWORD=<40 hex digits> (hex, so that no JAAS line, YAML
# value, CQL string or shell word needs quoting). Kafka's SCRAM users are written into the
# metadata log when it is formatted and Cassandra's roles into its tables, so passwords lost
# while the data is kept cannot be made again: that needs `reset --secure`.
SECRET_NAMES=(KAFKA_ADMIN KAFKA_UBSCORE KAFKA_PRODUCER CQL_ADMIN CQL_UBSCORE CQL_CASSANDRA STORE)

new_password() { openssl rand -hex 20; }

load_passwords() {
    local name
    if [[ ! -s "$PASSWORDS_FILE" ]]; then
        if [[ -e "$STATE_HOME/kafka/data/meta.properties" || -d "$STATE_HOME/cassandra/data/data" ]]; then
            die "${PASSWORDS_FILE#"$REPO_HOME"/} is missing but the secured stack has data: its users cannot be logged in to; run 'stack/bin/stack reset --secure'"
        fi
        mkdir -p "$STATE_HOME"
        for name in "${SECRET_NAMES[@]}"; do echo "${name}_PASSWORD=$(new_password)"; done >"$PASSWORDS_FILE.tmp"
        mv "$PASSWORDS_FILE.tmp" "$PASSWORDS_FILE"
    fi
    # shellcheck disable=SC1090
    source "$PASSWORDS_FILE"
    for name in "${SECRET_NAMES[@]}"; do
        name="${name}_PASSWORD"
        [[ "${!name:-}" =~ ^[0-9a-f]+$ ]] || die "${PASSWORDS_FILE#"$REPO_HOME"/} has no valid $name: run 'stack/bin/stack reset --secure'"
    done
}

# ---------------------------------------------------------------- certificates

# The CA and every certificate are made once, together; certs/.complete marks a finished set
# (a half-made set from an interrupted `up` is made again from scratch).
make_certs() {
    [[ -f "$CERTS_HOME/.complete" ]] && return 0
    echo "stack: making a CA and certificates in ${CERTS_HOME#"$REPO_HOME"/}/"
    rm -rf "$CERTS_HOME"
    mkdir -p "$CERTS_HOME"
    make_ca
    # Servers: names the clients use (127.0.0.1, localhost); clientAuth too, since the broker also
    # connects to its own controller listener with its certificate. The CN is the principal.
    make_cert broker "DNS:localhost,IP:127.0.0.1" serverAuth,clientAuth
    make_cert cassandra "DNS:localhost,IP:127.0.0.1" serverAuth
    # The one client certificate of the stack, for every mTLS client (the workers, cqlsh, tools).
    make_cert client "" clientAuth
    make_keystore broker
    make_keystore cassandra
    make_truststore
    rm -f "$CERTS_HOME"/*.csr "$CERTS_HOME"/*.ext
    touch "$CERTS_HOME/.complete"
}

make_ca() {
    local config="$CERTS_HOME/ca.cnf"
    # A config of our own: the system's openssl.cnf adds extensions that differ between versions.
    cat >"$config" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 -config "$config" -extensions ca \
        -subj "/O=ubscore-local/CN=ubscore-local-ca" -keyout "$CERTS_HOME/ca.key" -out "$CERTS_HOME/ca.pem" 2>/dev/null ||
        die "openssl could not make the CA"
    rm -f "$config"
}

# make_cert NAME SAN EKU: NAME.key (PKCS#8, unencrypted: the Python clients load it as it is) and
# NAME.pem, signed by the CA, subject CN=NAME,O=ubscore-local.
make_cert() {
    local name=$1 san=$2 eku=$3 ext="$CERTS_HOME/$1.ext"
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid, issuer"
        [[ -z "$san" ]] || echo "subjectAltName = $san"
    } >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/O=ubscore-local/CN=$name" \
        -keyout "$CERTS_HOME/$name.key" -out "$CERTS_HOME/$name.csr" 2>/dev/null &&
        openssl x509 -req -sha256 -days 825 -in "$CERTS_HOME/$name.csr" -CA "$CERTS_HOME/ca.pem" \
            -CAkey "$CERTS_HOME/ca.key" -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" \
            -out "$CERTS_HOME/$name.pem" 2>/dev/null ||
        die "openssl could not make the $name certificate"
}

# NAME.p12: the server's key and certificate chain, for the JVM (passwords from the environment,
# not the command line, which other users can read in ps).
make_keystore() {
    local name=$1
    STACK_STORE_PASSWORD=$STORE_PASSWORD openssl pkcs12 -export -name "$name" \
        -in "$CERTS_HOME/$name.pem" -inkey "$CERTS_HOME/$name.key" -certfile "$CERTS_HOME/ca.pem" \
        -out "$CERTS_HOME/$name.p12" -passout env:STACK_STORE_PASSWORD ||
        die "openssl could not make the $name keystore"
}

# truststore.p12: the CA alone. keytool, not openssl: a certificate that openssl 3.0 puts into a
# PKCS12 file without a key is not a trusted entry for Java.
make_truststore() {
    local keytool
    keytool="$(dirname "$(readlink -f "$JAVA")")/keytool"
    [[ -x "$keytool" ]] || die "keytool not found beside $JAVA"
    STACK_STORE_PASSWORD=$STORE_PASSWORD "$keytool" -importcert -noprompt -alias ubscore-local-ca \
        -file "$CERTS_HOME/ca.pem" -keystore "$CERTS_HOME/truststore.p12" -storetype PKCS12 \
        -storepass:env STACK_STORE_PASSWORD >/dev/null 2>&1 ||
        die "keytool could not make the truststore"
}

# ---------------------------------------------------------------- configs

# The broker's config: the plain stack's, rendered as usual, with stack/secure/server.properties.in
# on top (listeners, TLS, SASL, the authorizer).
secure_kafka_config() {
    local node=$1 config=$2 overrides
    overrides=$(mktemp "$STATE_HOME/overrides.XXXXXX")
    fill_template "$SECURE_HOME/server.properties.in" "PORT=$(broker_port "$node")" \
        "CONTROLLER_PORT=$(controller_port "$node")" "CERTS=$CERTS_HOME" \
        "STORE_PASSWORD=$STORE_PASSWORD" "KAFKA_ADMIN_PASSWORD=$KAFKA_ADMIN_PASSWORD" >"$overrides"
    merge_config "$overrides" "$config" >"$config.tmp"
    mv "$config.tmp" "$config"
    rm -f "$overrides"
}

# The SCRAM users, written into the metadata log when the storage is formatted (KRaft has no
# other way to add the first one: the broker cannot be logged in to before a user exists).
# They are on the format's command line for the two seconds it runs.
secure_format_args() {
    printf '%s\n' --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" \
        --add-scram "SCRAM-SHA-512=[name=ubscore,password=$KAFKA_UBSCORE_PASSWORD]" \
        --add-scram "SCRAM-SHA-512=[name=producer,password=$KAFKA_PRODUCER_PASSWORD]"
}

# The node's config: the plain stack's cassandra.yaml with stack/secure/cassandra.yaml.in on top.
secure_cassandra_config() {
    local config=$1 overrides
    overrides=$(mktemp "$STATE_HOME/overrides.XXXXXX")
    fill_template "$SECURE_HOME/cassandra.yaml.in" "STORAGE_PORT=$cassandra_storage_port" \
        "SSL_STORAGE_PORT=$cassandra_ssl_storage_port" "NATIVE_PORT=$cassandra_port" \
        "CERTS=$CERTS_HOME" "STORE_PASSWORD=$STORE_PASSWORD" >"$overrides"
    merge_config "$overrides" "$CASSANDRA_HOME/cassandra.yaml" >"$config"
    rm -f "$overrides"
}

# A Kafka client config for a SCRAM user, for the console tools (--command-config).
write_kafka_client_config() {
    local user=$1 password=$2
    cat >"$STATE_HOME/$user.properties" <<EOF
# Kafka client config of the secured stack's user $user (stack/bin/kafka-* --command-config).
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$password";
ssl.truststore.type=PKCS12
ssl.truststore.location=$CERTS_HOME/truststore.p12
ssl.truststore.password=$STORE_PASSWORD
EOF
}

# cqlshrc: TLS with the client certificate (stack/bin/cqlsh --secure reads it); the login is in a
# credentials file per role (cqlsh ignores one readable by others, hence umask 077).
write_cqlsh_configs() {
    cat >"$STATE_HOME/cqlshrc" <<EOF
; cqlsh config of the secured stack: stack/bin/cqlsh --secure, or
; cqlsh --cqlshrc $STATE_HOME/cqlshrc --credentials $STATE_HOME/cql-ubscore.credentials
[connection]
hostname = 127.0.0.1
port = $cassandra_port
ssl = true

[ssl]
certfile = $CERTS_HOME/ca.pem
validate = true
usercert = $CERTS_HOME/client.pem
userkey = $CERTS_HOME/client.key
EOF
    write_cql_credentials admin "$CQL_ADMIN_PASSWORD"
    write_cql_credentials ubscore "$CQL_UBSCORE_PASSWORD"
    # The default superuser's, used once: at the first start, to make `admin`.
    cassandra_roles_done || write_cql_credentials cassandra cassandra
}

write_cql_credentials() {
    printf '[plain_text_auth]\nusername = %s\npassword = %s\n' "$1" "$2" >"$STATE_HOME/cql-$1.credentials"
}

# .stack/secure/env: what a worker, a test or a shell needs (set -a; . .stack/secure/env; set +a).
write_env() {
    cat >"$STATE_HOME/env.tmp" <<EOF
UBS_KAFKA=kafka://127.0.0.1:$kafka_port
UBS_KAFKA_SECURITY_PROTOCOL=SASL_SSL
UBS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
UBS_KAFKA_SASL_USERNAME=ubscore
UBS_KAFKA_SASL_PASSWORD=$KAFKA_UBSCORE_PASSWORD
UBS_KAFKA_SSL_CAFILE=$CERTS_HOME/ca.pem
UBS_KAFKA_SSL_CERTFILE=$CERTS_HOME/client.pem
UBS_KAFKA_SSL_KEYFILE=$CERTS_HOME/client.key
UBS_CQL_HOSTS=127.0.0.1
UBS_CQL_PORT=$cassandra_port
UBS_CQL_USERNAME=ubscore
UBS_CQL_PASSWORD=$CQL_UBSCORE_PASSWORD
UBS_CQL_SSL_CAFILE=$CERTS_HOME/ca.pem
UBS_CQL_SSL_CERTFILE=$CERTS_HOME/client.pem
UBS_CQL_SSL_KEYFILE=$CERTS_HOME/client.key
UBS_CQL_LOCAL_DC=datacenter1
STACK_SECURE_HOME=$STATE_HOME
STACK_PRODUCER_USERNAME=producer
STACK_PRODUCER_PASSWORD=$KAFKA_PRODUCER_PASSWORD
EOF
    mv "$STATE_HOME/env.tmp" "$STATE_HOME/env"
}

# Everything a start needs that is not a service: passwords, certificates, client configs, env.
# Cheap when it all exists; configs are rewritten each time from the templates.
secure_prepare() {
    load_passwords
    make_certs
    write_kafka_client_config admin "$KAFKA_ADMIN_PASSWORD"
    write_kafka_client_config ubscore "$KAFKA_UBSCORE_PASSWORD"
    write_kafka_client_config producer "$KAFKA_PRODUCER_PASSWORD"
    write_cqlsh_configs
    write_env
}

# ---------------------------------------------------------------- readiness and setup

# cql_as ROLE ARGS...: cqlsh on the secured node over TLS with the client certificate, as ROLE.
cql_as() {
    local role=$1
    shift
    "$BIN_HOME/cqlsh" --secure --credentials "$STATE_HOME/cql-$role.credentials" "$@"
}

# cql_answers ROLE QUERY: the query, as ROLE, prints a version number within 30 s.
cql_answers() {
    timeout 30 "$BIN_HOME/cqlsh" --secure --credentials "$STATE_HOME/cql-$1.credentials" --connect-timeout=5 \
        -e "$2" 2>/dev/null | grep -q '[0-9]\.[0-9]'
}

cassandra_roles_done() { [[ -f "$STATE_HOME/cassandra/roles.done" ]]; }

# A real request through TLS and a login. Kafka: a topic listing as admin. Cassandra: a query as
# admin, or before the roles exist (first start) as the default superuser.
secure_probe() {
    local query="SELECT release_version FROM system.local"
    case $1 in
        kafka*)
            port_open "$kafka_port" &&
                timeout 30 "$BIN_HOME/kafka-topics" --bootstrap-server "127.0.0.1:$kafka_port" \
                    --command-config "$STATE_HOME/admin.properties" --list >/dev/null 2>&1
            ;;
        cassandra)
            port_open "$cassandra_port" || return 1
            cql_answers admin "$query" && return 0
            ! cassandra_roles_done && cql_answers cassandra "$query"
            ;;
    esac
}

# After the services answer: ACLs on Kafka, roles on Cassandra. Returns non-zero on failure
# (the caller prints the logs and stops the stack, like a failed start).
secure_setup() {
    local service
    for service in "$@"; do
        case $service in
            kafka) apply_acls || return 1 ;;
            cassandra) make_cql_roles || return 1 ;;
        esac
    done
}

# Adds every grant of acls.txt with kafka-acls, as admin. Lines that differ only in their names are
# one kafka-acls run (each is a JVM start). Done again only when acls.txt changed: adding an ACL
# that exists is harmless, but removing a line from the file does not remove the ACL (reset does).
apply_acls() {
    local stamp="$STATE_HOME/kafka/acls.applied" sum scope principal resource pattern name ops key
    local -A names=()
    local -a order=()
    sum=$(sha256sum "$ACLS_FILE" | cut -d' ' -f1)
    [[ -f "$stamp" && "$(<"$stamp")" == "$sum" ]] && return 0
    while read -r scope principal resource pattern name ops _ <&3; do
        [[ -z "$scope" || "$scope" == \#* ]] && continue
        [[ -n "$ops" ]] || { echo "stack: ${ACLS_FILE#"$REPO_HOME"/}: incomplete line: $scope $principal $resource $pattern $name" >&2; return 1; }
        key="$principal $resource $pattern $ops"
        [[ -n "${names[$key]:-}" ]] || order+=("$key")
        names[$key]="${names[$key]:-} $name"
    done 3<"$ACLS_FILE"
    echo "stack: applying ${#order[@]} ACL sets from ${ACLS_FILE#"$REPO_HOME"/} ..."
    for key in "${order[@]}"; do
        # shellcheck disable=SC2086  # the key is the four words principal, resource, pattern, operations
        add_acl $key "${names[$key]}" || return 1
    done
    echo "$sum" >"$stamp"
}

# add_acl PRINCIPAL RESOURCE PATTERN OPS "NAME..."
add_acl() {
    local principal=$1 resource=$2 pattern=$3 ops=$4 name op args=() log
    args=(--add --allow-principal "User:$principal" --resource-pattern-type "$pattern")
    for name in $5; do
        case $resource in
            topic) args+=(--topic "$name") ;;
            group) args+=(--group "$name") ;;
            cluster) args+=(--cluster) ;;
            *) echo "stack: ${ACLS_FILE#"$REPO_HOME"/}: unknown resource '$resource'" >&2; return 1 ;;
        esac
    done
    for op in ${ops//,/ }; do args+=(--operation "$op"); done
    log=$(mktemp "$STATE_HOME/acls.XXXXXX")
    if ! "$BIN_HOME/kafka-acls" --bootstrap-server "127.0.0.1:$kafka_port" \
        --command-config "$STATE_HOME/admin.properties" "${args[@]}" >"$log" 2>&1 </dev/null; then
        echo "stack: kafka-acls ${args[*]} failed:" >&2
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# First start: the default superuser cassandra/cassandra makes a superuser `admin` with a random
# password; admin then takes cassandra's login and superuser status away (a role cannot demote
# itself) and makes `ubscore`, allowed to create keyspaces: the sink creates its keyspace when it
# is missing (app/sink/cql.py), and the creator of a keyspace gets every permission on it.
make_cql_roles() {
    cassandra_roles_done && return 0
    echo "stack: making the CQL roles admin and ubscore, disabling the default superuser"
    if ! cql_as admin -e "SELECT role FROM system_auth.roles LIMIT 1" >/dev/null 2>&1; then
        cql_script cassandra "CREATE ROLE IF NOT EXISTS admin WITH SUPERUSER = true AND LOGIN = true AND PASSWORD = '$CQL_ADMIN_PASSWORD';" ||
            return 1
    fi
    cql_script admin \
        "ALTER ROLE cassandra WITH PASSWORD = '$CQL_CASSANDRA_PASSWORD' AND SUPERUSER = false AND LOGIN = false;" \
        "CREATE ROLE IF NOT EXISTS ubscore WITH LOGIN = true AND PASSWORD = '$CQL_UBSCORE_PASSWORD';" \
        "GRANT CREATE ON ALL KEYSPACES TO ubscore;" || return 1
    cql_as ubscore -e "SELECT release_version FROM system.local" >/dev/null ||
        { echo "stack: the CQL role ubscore cannot log in" >&2; return 1; }
    touch "$STATE_HOME/cassandra/roles.done"
    rm -f "$STATE_HOME/cql-cassandra.credentials"
}

# cql_script ROLE STATEMENT...: the statements from a private file (cqlsh -f), so that the
# passwords in them are not on a command line.
cql_script() {
    local role=$1 file status=0
    shift
    file=$(mktemp "$STATE_HOME/cql.XXXXXX")
    printf '%s\n' "$@" >"$file"
    cql_as "$role" -f "$file" >&2 || status=$?
    rm -f "$file"
    if ((status != 0)); then echo "stack: CQL statements as $role failed" >&2; fi
    return "$status"
}
