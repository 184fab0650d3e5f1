#!/bin/sh
# run-bench.sh BROKERD BROKERCTL BROKER_BENCH [ARGS...] - what `make bench`
# runs: a brokerd of its own on a socket in a fresh temporary directory,
# `brokerctl bench --baseline --reps 3 ARGS...` against it, then
# broker-bench (fan-out against unicast, the cost of a publish among
# 100,000 subscriptions: it starts brokerds of its own) with
# $BROKER_BENCH_ARGS.  The broker is stopped by its pid, whatever happens.
# Exit status 1 if any part failed.
set -u
brokerd=$1 ctl=$2 bb=$3
shift 3

dir=$(mktemp -d /tmp/brokerd-bench.XXXXXX) || exit 1
sock=$dir/brokerd.sock
"$brokerd" -f -s "$sock" --log-level error &
pid=$!
stop() {
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    st=$?
    rm -rf "$dir"
    return $st
}
trap 'stop; exit 1' INT TERM

n=0
until "$ctl" -s "$sock" ping >/dev/null 2>&1; do
    n=$((n + 1))
    if [ "$n" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "run-bench.sh: brokerd did not start on $sock" >&2
        stop
        exit 1
    fi
    sleep 0.1
done

rc=0
"$ctl" -s "$sock" bench --baseline --reps 3 "$@" || rc=1
stop || { echo "run-bench.sh: brokerd did not exit cleanly" >&2; rc=1; }
echo
# shellcheck disable=SC2086 # BROKER_BENCH_ARGS is a list of options
BROKERD=$brokerd "$bb" ${BROKER_BENCH_ARGS:-} || rc=1
exit $rc
