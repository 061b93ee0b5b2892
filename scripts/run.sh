#!/usr/bin/env bash
# Run vnet on this machine: the server on the embedded store, and this host's
# agent (as root: it programs bridges, VXLAN devices and DHCP for the ports
# bound to this host, and nothing else).
#
#   scripts/run.sh
#
# VNET_DATA (default ./vnet-data), VNET_LISTEN (default 127.0.0.1:9696),
# VNET_HOST (default: hostname) and VNET_UNDERLAY_IP (default: this host's
# source address toward the underlay, else 127.0.0.1) adjust it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release -p vnet
VNET=target/release/vnet
DATA=${VNET_DATA:-./vnet-data}
LISTEN=${VNET_LISTEN:-127.0.0.1:9696}
HOST=${VNET_HOST:-$(hostname)}
# No route out (an isolated host) is not an error: the fallback below applies.
UNDERLAY=${VNET_UNDERLAY_IP:-$( (ip -4 route get 192.0.2.1 2>/dev/null || true) | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')}
UNDERLAY=${UNDERLAY:-127.0.0.1}

"$VNET" server --listen "$LISTEN" --data-dir "$DATA" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null && break
    sleep 0.1
done
echo "vnet: API at http://$LISTEN (noauth); agent for host '$HOST', underlay $UNDERLAY"
"$VNET" agent --server "http://$LISTEN" --host "$HOST" --underlay-ip "$UNDERLAY"
