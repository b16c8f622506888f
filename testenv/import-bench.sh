#!/usr/bin/env bash
# make bench-import: time and peak memory of importing N individual enrollments
# (default 1,000,000) with `edgeprovctl import` into a daemon on the bbolt
# store. Not part of `make test`: it takes minutes and a few GB of disk.
#
#   N=1000000 BATCH=1000 PARALLEL=2 bash testenv/import-bench.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="$repo/bin"
N="${N:-1000000}"
BATCH="${BATCH:-1000}"
PARALLEL="${PARALLEL:-2}"
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

cat >"$scratch/edgeprovd.yaml" <<EOF
version: 1
stateDir: state
device:
  listen: 127.0.0.1:0
  hostNames: [localhost, 127.0.0.1]
service:
  listen: 127.0.0.1:0
linkedHubs:
  - {name: hub-a, hostName: hub-a.bench.local}
  - {name: hub-b, hostName: hub-b.bench.local}
log: {level: warn}
EOF
"$bin/edgeprovd" init --config "$scratch/edgeprovd.yaml" >/dev/null
"$bin/edgeprovd" run --config "$scratch/edgeprovd.yaml" --ready-file "$scratch/ready.json" 2>"$scratch/edgeprovd.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
	[[ -s "$scratch/ready.json" ]] && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$scratch/edgeprovd.log"; exit 1; }
	sleep 0.05
done
service="$(sed -E 's/.*"service":"([^"]+)".*/\1/' <"$scratch/ready.json")"
export EDGEPROV_CONNECTION_STRING="HostName=$service;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=$(cat "$scratch/state/policies/provisioningserviceowner.key")"
export EDGEPROV_CA_FILE="$scratch/state/tls/ca.pem"

echo "== generating $N rows"
# One key for every row keeps the generator simple; the daemon decodes and
# validates each row's key all the same.
awk -v n="$N" 'BEGIN {
	print "registrationId,primaryKey,iotHubs,tags"
	for (i = 0; i < n; i++) printf "bench-%07d,YmVuY2htYXJrIGVucm9sbG1lbnQga2V5LCAzMiBieS4=,hub-a.bench.local;hub-b.bench.local,\"{\"\"line\"\":7}\"\n", i
}' >"$scratch/devices.csv"
ls -l "$scratch/devices.csv" | awk '{printf "   %.1f MB\n", $5/1e6}'

echo "== edgeprovctl import (batch $BATCH, $PARALLEL in flight)"
start=$(date +%s.%N)
if [[ -x /usr/bin/time ]]; then
	/usr/bin/time -f "ctl_max_rss_kb=%M ctl_cpu_s=%U+%S" -o "$scratch/time.txt" \
		"$bin/edgeprovctl" import "$scratch/devices.csv" --batch-size "$BATCH" --parallel "$PARALLEL" --progress never -o json >"$scratch/summary.json"
	cat "$scratch/time.txt"
else
	"$bin/edgeprovctl" import "$scratch/devices.csv" --batch-size "$BATCH" --parallel "$PARALLEL" --progress never -o json >"$scratch/summary.json" &
	ctl=$!
	peak=0
	while kill -0 "$ctl" 2>/dev/null; do
		v=$(awk '/VmHWM/ {print $2}' "/proc/$ctl/status" 2>/dev/null || echo 0)
		[[ -n "$v" && "$v" -gt "$peak" ]] && peak=$v
		sleep 0.1
	done
	wait "$ctl"
	echo "ctl_max_rss_kb=$peak (sampled)"
fi
end=$(date +%s.%N)
jq -c '{rows, created, updated, failed, seconds}' "$scratch/summary.json"
awk -v s="$start" -v e="$end" -v n="$N" 'BEGIN { printf "wall %.1f s, %.0f enrollments/s\n", e - s, n / (e - s) }'
echo "daemon: $(grep -E 'VmHWM|VmRSS' "/proc/$daemon_pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
ls -l "$scratch/state/edgeprov.db" | awk '{printf "store: %.0f MB\n", $5/1e6}'
"$bin/edgeprovctl" enrollment show "bench-$(printf %07d $((N - 1)))" -o json | jq -c '{registrationId, etag}'
