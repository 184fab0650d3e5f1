#!/bin/sh
# bridge-bench.sh - host A -> brokerd-nats -> NATS -> brokerd-nats -> host B
# on this machine: a nats-server on 127.0.0.1, two brokerds (two sockets)
# and a bridge on each, then bridge-bench (and `nats bench`, if the NATS
# CLI is installed, against the same server).  `make bench-bridge` runs it.
#
#   bridge-bench.sh BUILDDIR [bridge-bench options]
set -eu

bin=$1; shift
tmp=$(mktemp -d /tmp/bridge-bench.XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || :; done
    for p in $pids; do wait "$p" 2>/dev/null || :; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# retry N CMD...: CMD until it succeeds, 0.1 s apart, at most N times.
retry() {
    n=$1; shift
    until "$@" >/dev/null 2>&1; do
        n=$((n - 1)); [ "$n" -gt 0 ] || return 1; sleep 0.1
    done
}

port=${BRIDGE_BENCH_PORT:-14333}
command -v nats-server >/dev/null ||
    { echo "bridge-bench.sh: nats-server is not installed" >&2; exit 1; }
nats-server -a 127.0.0.1 -p "$port" >"$tmp/nats.log" 2>&1 &
pids="$pids $!"
for h in a b; do
    "$bin/brokerd" -f -s "$tmp/$h.sock" >"$tmp/brokerd-$h.log" 2>&1 &
    pids="$pids $!"
done
printf 'server = nats://127.0.0.1:%s\nhost = a\nexport = bench.>\n' "$port" \
    >"$tmp/a.conf"
printf 'server = nats://127.0.0.1:%s\nhost = b\nimport = bench.>\n' "$port" \
    >"$tmp/b.conf"
for h in a b; do
    retry 50 "$bin/brokerctl" -s "$tmp/$h.sock" ping
    "$bin/brokerd-nats" -c "$tmp/$h.conf" -s "$tmp/$h.sock" \
        >"$tmp/bridge-$h.log" 2>&1 &
    pids="$pids $!"
    retry 100 "$bin/brokerctl" -s "$tmp/$h.sock" wait brokerd-nats
done
"$bin/bridge-bench" --nats "nats://127.0.0.1:$port" "$@" \
    "$tmp/a.sock" "$tmp/b.sock"
for h in a b; do
    echo "bridge $h:"
    "$bin/brokerctl" -s "$tmp/$h.sock" bridge | grep -E '^(msgs|drops|drop_)'
done
if command -v nats >/dev/null; then
    echo "nats bench (the same server):"
    nats -s "nats://127.0.0.1:$port" bench benchcli --pub 1 --sub 1 \
        --msgs 100000 --size 128
else
    echo "(no NATS CLI: \`nats bench\` skipped; the libnats line above is" \
         "the same server without the bridges)"
fi
