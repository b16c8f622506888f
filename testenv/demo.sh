#!/usr/bin/env bash
# make demo: a daemon on the embedded store with the example config and catalog,
# in a scratch state directory, and one example device provisioned by the agent.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="$repo/bin"
scratch="$(mktemp -d)"
daemon_pid=""
cleanup() {
	if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid"
		wait "$daemon_pid" || true
	fi
	rm -rf "$scratch"
}
trap cleanup EXIT

echo "== edgeprovd init (state in $scratch)"
"$bin/edgeprovd" init --config configs/edgeprovd.example.yaml --state-dir "$scratch/state"

echo "== edgeprovd run"
"$bin/edgeprovd" run --config configs/edgeprovd.example.yaml --state-dir "$scratch/state" \
	--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --service-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --ready-file "$scratch/ready.json" 2>"$scratch/edgeprovd.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
	[[ -s "$scratch/ready.json" ]] && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$scratch/edgeprovd.log"; exit 1; }
	sleep 0.05
done
ready="$(cat "$scratch/ready.json")"
addr="$(sed -E 's/.*"device":"([^"]+)".*/\1/' <<<"$ready")"
scope="$(sed -E 's/.*"idScope":"([^"]+)".*/\1/' <<<"$ready")"
echo "   serving on $addr, ID scope $scope"

echo "== edgeprov-agent provision (configs/agent.example.yaml, pointed at this daemon)"
sed -e "s|^provisioningHost:.*|provisioningHost: $addr|" \
	-e "s|^idScope:.*|idScope: $scope|" \
	-e "s|^trustBundle:.*|trustBundle: $scratch/state/tls/ca.pem|" \
	-e "s|groupKeyFile: keys/|groupKeyFile: $repo/configs/keys/|" \
	-e "s|^stateFile:.*|stateFile: $scratch/agent-state.json|" \
	configs/agent.example.yaml >"$scratch/agent.yaml"
"$bin/edgeprov-agent" provision --config "$scratch/agent.yaml"

echo "== the device's assignment (from the agent's result file)"
cat "$scratch/agent-state.json"

echo "== edgeprovctl enrollment list and registration list (through the service API)"
service="$(sed -E 's/.*"service":"([^"]+)".*/\1/' <<<"$ready")"
export EDGEPROV_CONNECTION_STRING="HostName=$service;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=$(cat "$scratch/state/policies/provisioningserviceowner.key")"
export EDGEPROV_CA_FILE="$scratch/state/tls/ca.pem"
"$bin/edgeprovctl" enrollment list
"$bin/edgeprovctl" registration list

echo "== daemon log"
cat "$scratch/edgeprovd.log"
