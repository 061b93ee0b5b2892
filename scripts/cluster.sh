#!/usr/bin/env bash
# A local vnet cluster for trying replicas: three etcd members and three
# `vnet server` replicas on loopback, everything (data, logs, pids) in DIR.
#
#   scripts/cluster.sh up DIR       start it (refused if DIR holds a running one)
#   scripts/cluster.sh status DIR   which replica leads, and etcd's members
#   scripts/cluster.sh down DIR     stop what `up` started (by its pids)
#
# Replicas answer at http://127.0.0.1:9701, :9702 and :9703 (any of them takes
# reads and writes; agents take all three: --server URL,URL,URL). etcd
# members listen for clients on 127.0.0.1:23791-23793. VNET (default
# target/debug/vnet, built if missing) and VNET_ETCD_BIN (default etcd) pick
# the binaries; etcd comes from Debian's etcd-server (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
VNET=${VNET:-target/debug/vnet}
ETCD=${VNET_ETCD_BIN:-etcd}
members=(1 2 3)
endpoints=$(printf 'http://127.0.0.1:2379%s,' "${members[@]}")
endpoints=${endpoints%,}
peers=""
for m in "${members[@]}"; do peers+="m$m=http://127.0.0.1:2380$m,"; done
peers=${peers%,}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Waits (at most 30 s) until `curl URL` prints something matching PATTERN.
wait_for() {
    local url=$1 pattern=$2
    for _ in $(seq 300); do
        curl -fsS --max-time 1 "$url" 2>/dev/null | grep -q "$pattern" && return 0
        sleep 0.1
    done
    echo "cluster: $url did not answer in time" >&2
    return 1
}

case $cmd in
up)
    for f in "$dir"/*.pid; do
        if running "$f"; then echo "cluster: $dir already runs ($f)" >&2; exit 1; fi
    done 2>/dev/null
    [[ -x $VNET ]] || cargo build -p vnet
    mkdir -p "$dir"
    for m in "${members[@]}"; do
        ETCD_UNSUPPORTED_ARCH=$(uname -m) "$ETCD" --name "m$m" \
            --data-dir "$dir/etcd$m" \
            --listen-client-urls "http://127.0.0.1:2379$m" \
            --advertise-client-urls "http://127.0.0.1:2379$m" \
            --listen-peer-urls "http://127.0.0.1:2380$m" \
            --initial-advertise-peer-urls "http://127.0.0.1:2380$m" \
            --initial-cluster "$peers" --initial-cluster-state new \
            --max-txn-ops 16384 --max-request-bytes 67108864 \
            --logger zap --log-outputs stderr >"$dir/etcd$m.log" 2>&1 &
        echo $! >"$dir/etcd$m.pid"
    done
    for m in "${members[@]}"; do wait_for "http://127.0.0.1:2379$m/health" '"health":"true"'; done
    for r in "${members[@]}"; do
        "$VNET" server --listen "127.0.0.1:970$r" --store etcd \
            --etcd-endpoints "$endpoints" \
            --etcd-max-txn-ops 16384 --etcd-max-request-bytes 67108864 \
            --etcd-timeout 2 --etcd-claim-ttl 3 >"$dir/server$r.log" 2>&1 &
        echo $! >"$dir/server$r.pid"
    done
    for r in "${members[@]}"; do wait_for "http://127.0.0.1:970$r/vnet/v1/replica" '"leads"'; done
    echo "cluster: replicas at http://127.0.0.1:9701,http://127.0.0.1:9702,http://127.0.0.1:9703"
    echo "cluster: etcd at $endpoints; logs in $dir"
    ;;
status)
    for r in "${members[@]}"; do
        printf 'server%s (pid %s): ' "$r" "$(cat "$dir/server$r.pid" 2>/dev/null || echo -)"
        curl -fsS --max-time 2 "http://127.0.0.1:970$r/vnet/v1/replica" 2>/dev/null || printf 'not answering'
        echo
    done
    for m in "${members[@]}"; do
        printf 'etcd m%s (pid %s): ' "$m" "$(cat "$dir/etcd$m.pid" 2>/dev/null || echo -)"
        curl -fsS --max-time 2 "http://127.0.0.1:2379$m/health" 2>/dev/null || printf 'not answering'
        echo
    done
    ;;
down)
    for f in "$dir"/server*.pid "$dir"/etcd*.pid; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        running "$f" && kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$f"
    done
    ;;
*)
    echo "cluster: unknown command $cmd (up, status, down)" >&2
    exit 2
    ;;
esac
