#!/usr/bin/env bash
# contrib/dev.sh - build brokerd from a clean clone and show or test it.
#
#   bash contrib/dev.sh demo             build, then a short brokerd demo
#   bash contrib/dev.sh test             build, run `make check`, print
#                                        "N passed, N failed"
#   bash contrib/dev.sh test --sanitize  the same in build-san/, configured
#                                        with --enable-sanitizers
#   bash contrib/dev.sh test --valgrind  the integration tests (scaled down)
#                                        with brokerd under valgrind
#
# Meant for Debian 12 as root: missing build dependencies are installed
# with apt-get.  The build happens in build/ (or build-san/) under the
# repository; both are ignored by git.
set -euo pipefail

DEV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_PACKAGES=(libuv1-dev libxxhash-dev libcriterion-dev autoconf automake
              libtool pkg-config make gcc clang libclang-rt-14-dev tshark
              systemd libnats-dev nats-server)

say() { printf '==> %s\n' "$*"; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

# ---- dependencies and build ------------------------------------------------

dev_install_deps() {
    dev_install "${DEV_PACKAGES[@]}"
}

# dev_install PKG...: apt-get install the packages that are missing.
dev_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
                grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] ||
        die "missing packages (${missing[*]}): run as root or install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's wireshark-common asks whether non-root users may capture
    case " ${missing[*]} " in
        *" tshark "*)
            echo "wireshark-common wireshark-common/install-setuid boolean false" |
                debconf-set-selections ;;
    esac
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# dev_build DIR [configure args...]: autotools, configure and make -j2.
dev_build() {
    local dir=$1; shift
    cd "$DEV_ROOT"
    if [ ! -x configure ] || [ configure -ot configure.ac ] ||
       [ configure -ot Makefile.am ]; then
        say "autoreconf -fi"
        autoreconf -fi
    fi
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ] || [ "$dir/config.status" -ot configure ]; then
        say "configuring in ${dir#"$DEV_ROOT"/} $*"
        (cd "$dir" && "$DEV_ROOT/configure" -q "$@")
    fi
    if [ -n "${DEV_QUIET_BUILD:-}" ]; then
        say "make -j2 in ${dir#"$DEV_ROOT"/} (log: ${dir#"$DEV_ROOT"/}/build.log)"
        if ! make -C "$dir" -s -j2 >"$dir/build.log" 2>&1; then
            tail -n 30 "$dir/build.log" >&2
            die "the build failed"
        fi
    else
        say "make -j2 in ${dir#"$DEV_ROOT"/}"
        make -C "$dir" -s -j2
    fi
}

# ---- demo -------------------------------------------------------------------

DEMO_PIDS=()
DEMO_TMP=

demo_cleanup() {
    local pid
    for pid in "${DEMO_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${DEMO_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ -n "$DEMO_TMP" ] && rm -rf "$DEMO_TMP"
    return 0
}

# retry N CMD...: run CMD up to N times, 0.1 s apart, until it succeeds.
retry() {
    local n=$1; shift
    while ! "$@" 2>/dev/null; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

# demo_subscribed CTL...: both demo subscriptions are in place.
demo_subscribed() {
    "$@" status | grep -Eq '^subscriptions: +2$'
}

dev_demo() {
    DEV_QUIET_BUILD=1 dev_build "$DEV_ROOT/build"
    local bin=$DEV_ROOT/build
    DEMO_TMP=$(mktemp -d /tmp/brokerd-demo.XXXXXX)
    trap demo_cleanup EXIT
    local sock=$DEMO_TMP/brokerd.sock
    local ctl=("$bin/brokerctl" -s "$sock")

    echo
    say "starting brokerd in the foreground on $sock"
    "$bin/brokerd" -f -s "$sock" --log-level warn &
    local broker=$!
    DEMO_PIDS+=("$broker")
    retry 50 "${ctl[@]}" ping >/dev/null || die "brokerd did not come up"

    say "brokerctl ping"
    "${ctl[@]}" ping
    say "brokerctl status"
    "${ctl[@]}" status

    say "brokerctl serve echo --echo   (in the background)"
    "${ctl[@]}" serve echo --echo &
    DEMO_PIDS+=("$!")
    say "brokerctl call echo hello     (the reply follows)"
    local reply
    reply=$(retry 50 "${ctl[@]}" call echo hello) || die "call echo failed"
    printf '%s\n' "$reply"

    say "brokerctl listen news         (in the background)"
    "${ctl[@]}" listen news >"$DEMO_TMP/news.out" &
    local listener=$!
    DEMO_PIDS+=("$listener")
    say "brokerctl send news 'brokerd says hi'"
    retry 50 "${ctl[@]}" send news 'brokerd says hi' ||
        die "send news failed"
    retry 50 grep -q 'brokerd says hi' "$DEMO_TMP/news.out" ||
        die "the listener printed nothing"
    say "the listener printed:"
    cat "$DEMO_TMP/news.out"

    say "brokerctl sub 'sensors.*.temp' --count 1, and sub 'sensors.>' --count 1"
    "${ctl[@]}" sub 'sensors.*.temp' --count 1 >"$DEMO_TMP/sub1.out" &
    local sub1=$!
    "${ctl[@]}" sub 'sensors.>' --count 1 >"$DEMO_TMP/sub2.out" &
    local sub2=$!
    DEMO_PIDS+=("$sub1" "$sub2")
    retry 50 demo_subscribed "${ctl[@]}" ||
        die "the subscribers did not subscribe"
    say "brokerctl subs"
    "${ctl[@]}" subs
    say "brokerctl pub sensors.kitchen.temp 21.5"
    "${ctl[@]}" pub sensors.kitchen.temp 21.5 || die "pub failed"
    wait "$sub1" && wait "$sub2" || die "a subscriber failed"
    say "both subscribers printed (topic, then payload):"
    cat "$DEMO_TMP/sub1.out" "$DEMO_TMP/sub2.out"

    say "stopping brokerd with SIGTERM"
    kill -TERM "$broker"
    local rc=0
    wait "$broker" || rc=$?
    local keep=() pid
    for pid in "${DEMO_PIDS[@]}"; do
        [ "$pid" = "$broker" ] || keep+=("$pid")
    done
    DEMO_PIDS=("${keep[@]}")
    [ "$rc" -eq 0 ] || die "brokerd exited with status $rc"
    # listen and serve end by themselves when the broker shuts down.
    wait "$listener" || die "brokerctl listen did not exit cleanly"
    say "demo done"
}

# ---- test ---------------------------------------------------------------------

# Print the TESTS variable of the Makefile in $1.
dev_tests_list() {
    make -s --no-print-directory -C "$1" -f Makefile -f - dev-print-tests <<'EOF'
dev-print-tests:
	@echo $(TESTS)
EOF
}

# dev_count DIR: sum criterion's per-binary "Synthesis" lines into the
# globals PASSED and FAILED.  Crashes count as failures, and so does a test
# binary that did not run (no .trs), failed without criterion's summary, or
# failed after an all-passing summary (sanitizer report at exit).
dev_count() {
    local dir=$1 t log syn passing failing crashing result
    local tests=${2:-$(dev_tests_list "$dir")}
    PASSED=0 FAILED=0
    for t in $tests; do
        log=$dir/$t.log
        if [ ! -f "$dir/$t.trs" ] || [ ! -f "$log" ]; then
            printf 'dev.sh: %s did not run\n' "$t" >&2
            FAILED=$((FAILED + 1))
            continue
        fi
        result=$(sed -n 's/^:test-result: *//p' "$dir/$t.trs" | head -n1)
        syn=$(sed 's/\x1b\[[0-9;]*m//g' "$log" |
              grep -Eo 'Synthesis: Tested: [0-9]+ \| Passing: [0-9]+ \| Failing: [0-9]+ \| Crashing: [0-9]+' |
              tail -n1 || true)
        if [ -z "$syn" ]; then
            printf 'dev.sh: %s: %s without a criterion summary\n' \
                "$t" "${result:-no result}" >&2
            FAILED=$((FAILED + 1))
            continue
        fi
        [[ $syn =~ Passing:\ ([0-9]+).*Failing:\ ([0-9]+).*Crashing:\ ([0-9]+) ]]
        passing=${BASH_REMATCH[1]}
        failing=${BASH_REMATCH[2]}
        crashing=${BASH_REMATCH[3]}
        PASSED=$((PASSED + passing))
        FAILED=$((FAILED + failing + crashing))
        [ $((failing + crashing)) -eq 0 ] || dev_show_failures "$t" "$log"
        if [ "$result" != PASS ] && [ "$result" != SKIP ] &&
           [ $((failing + crashing)) -eq 0 ]; then
            printf 'dev.sh: %s: %s after %s passing tests\n' \
                "$t" "$result" "$passing" >&2
            FAILED=$((FAILED + 1))
        fi
    done
}

# dev_show_failures TEST LOG: criterion's lines about the failing tests of
# one binary, prefixed "dev.sh: FAIL", so that a CI summary can name them.
dev_show_failures() {
    sed 's/\x1b\[[0-9;]*m//g' "$2" |
        grep -E '^\[(FAIL|----)\] ' | grep -vE '^\[----\] +(Criterion|Running)' |
        head -n 20 | sed "s|^|dev.sh: FAIL ${1##*/}: |" >&2 || true
}

# Valgrind's verdict on brokerd reaches the tests as its exit status.
DEV_VALGRIND="valgrind -q --error-exitcode=99 --leak-check=full"
DEV_VALGRIND+=" --errors-for-leak-kinds=definite,indirect"

dev_test() {
    local dir=$DEV_ROOT/build conf=() tests="" mode=${1:-}
    case "$mode" in
        "") ;;
        --sanitize) dir=$DEV_ROOT/build-san; conf=(--enable-sanitizers) ;;
        --valgrind) dir=$DEV_ROOT/build-vg
                    dev_install valgrind ;;
        *) die "unknown test option '$1' (try: test --sanitize|--valgrind)" ;;
    esac
    dev_build "$dir" "${conf[@]}"
    tests=$(dev_tests_list "$dir")
    if [ "$mode" = --valgrind ]; then
        tests=$(printf '%s\n' $tests | grep '/integ/' | tr '\n' ' ')
        export BROKERD_WRAPPER=$DEV_VALGRIND BROKER_TEST_SCALE=0.1
    fi
    # Old results must not count if this run stops before a test runs.
    local t
    for t in $tests; do
        rm -f "$dir/$t.log" "$dir/$t.trs"
    done
    say "make check in ${dir#"$DEV_ROOT"/}${BROKERD_WRAPPER:+ (brokerd under valgrind)}"
    local rc=0
    make -C "$dir" -j2 check TESTS="$tests" || rc=$?
    dev_count "$dir" "$tests"
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ]; then
        printf 'dev.sh: make check failed (status %s)\n' "$rc" >&2
        FAILED=1
    fi
    if [ "$FAILED" -ne 0 ] && [ -f "$dir/test-suite.log" ]; then
        printf 'dev.sh: see %s\n' "$dir/test-suite.log" >&2
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

# ---- main -----------------------------------------------------------------------

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        demo)
            [ $# -eq 0 ] || die "demo takes no arguments"
            dev_install_deps
            dev_demo ;;
        test)
            [ $# -le 1 ] || die "usage: dev.sh test [--sanitize|--valgrind]"
            dev_install_deps
            dev_test "$@" ;;
        -h|--help|help)
            usage ;;
        *)
            usage >&2
            exit 2 ;;
    esac
}

main "$@"
