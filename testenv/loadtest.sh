#!/usr/bin/env bash
# Whole-system load test (not part of make test): a daemon on a scratch state
# directory with one symmetric-key group, and `edgeprovctl bench` registering
# DEVICES devices over fresh TLS connections, then the same client against a
# bare TLS server (--ceiling). Usage: testenv/loadtest.sh [DEVICES] [CONCURRENCY] [POLL_WAIT] [STORE]
#   STORE: bolt (default) or a PostgreSQL DSN.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
devices="${1:-10000}"; conc="${2:-128}"; pollwait="${3:--1s}"; store="${4:-bolt}"
bin="$repo/bin"
scratch="$(mktemp -d)"; pid=""
trap '[[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid"; rm -rf "$scratch"' EXIT
head -c 32 /dev/urandom | base64 >"$scratch/group.key"
cat >"$scratch/enrollments.yaml" <<YAML
version: 1
enrollmentGroups:
  - enrollmentGroupId: bench
    registrationIdPrefixes: [bench-]
    attestation: {type: symmetricKey, symmetricKey: {keyFile: group.key}}
YAML
storeblock=""
if [[ "$store" != bolt ]]; then
	printf '%s\n' "$store" >"$scratch/pg.dsn"
	storeblock=$'store:\n  type: postgres\n  postgres: {dsnFile: pg.dsn, maxConns: 64}'
fi
cat >"$scratch/edgeprovd.yaml" <<YAML
version: 1
stateDir: state
catalog: enrollments.yaml
$storeblock
device: {listen: 127.0.0.1:0, hostNames: [localhost]}
linkedHubs:
  - {name: hub-a, hostName: hub-a.bench.local}
  - {name: hub-b, hostName: hub-b.bench.local}
log: {level: warn}
YAML
"$bin/edgeprovd" init --config "$scratch/edgeprovd.yaml" >/dev/null
"$bin/edgeprovd" run --config "$scratch/edgeprovd.yaml" --ready-file "$scratch/ready.json" 2>"$scratch/log" &
pid=$!
for _ in $(seq 1 200); do [[ -s "$scratch/ready.json" ]] && break; sleep 0.05; done
ready="$(cat "$scratch/ready.json")"
addr="$(sed -E 's/.*"device":"([^"]+)".*/\1/' <<<"$ready")"
scope="$(sed -E 's/.*"idScope":"([^"]+)".*/\1/' <<<"$ready")"
"$bin/edgeprovctl" bench --addr "$addr" --ca-file "$scratch/state/tls/ca.pem" --id-scope "$scope" \
	--group-key-file "$scratch/group.key" --devices "$devices" --concurrency "$conc" --poll-wait "$pollwait" --ceiling
