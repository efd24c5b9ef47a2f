# Shared by the scripts in stack/bin (sourced, not run). Everything is derived from the location
# of this file, so the stack works from any clone directory and from any working directory.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file

STACK_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # <repo>/stack
REPO_HOME=$(dirname "$STACK_HOME")                            # <repo>
STATE_HOME="$REPO_HOME/.stack"                                # data, logs, pid files (gitignored)
KAFKA_HOME="$STACK_HOME/kafka"
CASSANDRA_HOME="$STACK_HOME/cassandra"

die() {
    echo "stack: $*" >&2
    exit 1
}

# Prints the path of a Java 17 runtime. Cassandra 5.0 runs on Java 11 or 17 only and Kafka 3.9
# on 11-23; this machine may also carry newer JDKs, so the first Java 17 found wins:
# $STACK_JAVA, $JAVA_HOME, `java` on PATH, then /usr/lib/jvm/*.
find_java() {
    local candidate
    for candidate in "${STACK_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" \
        /usr/lib/jvm/*17*/bin/java /usr/lib/jvm/*/bin/java; do
        [[ -n "$candidate" && -x "$candidate" ]] || continue
        if [[ "$("$candidate" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')" == "17" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

require_java() {
    JAVA=$(find_java) || die "Java 17 not found (install it: apt-get install -y openjdk-17-jdk-headless, or set STACK_JAVA=/path/to/java17/bin/java)"
}

# True when <project>/lib holds a complete copy of the project's classpath, newer than its pom.
is_built() {
    local project=$1
    [[ -f "$project/lib/.complete" && ! "$project/pom.xml" -nt "$project/lib/.complete" ]]
}

# Fills <project>/lib from Maven Central when it is missing or older than the pom.
build_project() {
    local project=$1
    is_built "$project" && return 0
    command -v mvn >/dev/null 2>&1 || die "Maven not found (install it: apt-get install -y maven) - needed once to assemble $(basename "$project")/lib"
    echo "stack: assembling $(basename "$project") from Maven Central into ${project#"$REPO_HOME"/}/lib ..." >&2
    rm -rf "${project:?}/lib"
    # Maven's output is kept out of sight unless it fails (even -q prints stray colour codes).
    local log
    log=$(mktemp)
    if ! (cd "$project" && mvn -B -q -Dstyle.color=never package) >"$log" 2>&1; then
        sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -v '^[[:space:]]*$' >&2 || true
        rm -f "$log"
        die "Maven failed to assemble $(basename "$project") (its output is above)"
    fi
    rm -f "$log"
    touch "$project/lib/.complete"
}

# Runs a Kafka console tool (main class, then its arguments) with WARN-only logging on stderr.
run_kafka_tool() {
    local main=$1
    shift
    require_java
    build_project "$KAFKA_HOME" >&2
    exec "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$KAFKA_HOME/tools-log4j.properties" \
        -cp "$KAFKA_HOME/lib/*" "$main" "$@"
}

# Prints a template with each @NAME@ replaced: fill_template FILE NAME=value ...
# (values are paths, ports and generated hex passwords, never containing '#').
fill_template() {
    local file=$1 pair expressions=()
    shift
    for pair in "$@"; do expressions+=(-e "s#@${pair%%=*}@#${pair#*=}#g"); done
    sed "${expressions[@]}" "$file"
}

# Prints BASE with every top-level key that OVERRIDES sets removed, then OVERRIDES: a config
# derived from another without two values for one key. Works for Java properties (key=value)
# and for YAML (key: value, the key's indented or "- " lines going with it).
merge_config() {
    local overrides=$1 base=$2
    awk -v keyre='^[A-Za-z_][A-Za-z0-9_.-]*[ \t]*[:=]' '
        function key_of(line) { match(line, keyre); line = substr(line, 1, RLENGTH - 1); sub(/[ \t]+$/, "", line); return line }
        NR == FNR { if ($0 ~ keyre) replaced[key_of($0)] = 1; next }
        $0 ~ keyre { skipping = (key_of($0) in replaced) }
        $0 !~ keyre && $0 !~ /^([ \t-]|$)/ { skipping = 0 }
        !skipping { print }
    ' "$overrides" "$base"
    echo
    cat "$overrides"
}
