#!/usr/bin/env bash
# Whole-system load test (not part of make test): scratch edgeprovd replicas
# with a symmetric-key group and an X.509 group, and `edgeprovctl bench`
# registering DEVICES devices over fresh TLS connections, then the same client
# against a bare TLS server (--ceiling).
#
# Usage: testenv/loadtest.sh [DEVICES] [CONCURRENCY] [POLL_WAIT] [STORE]
#   STORE: bolt (default), postgres (a scratch PostgreSQL from Debian's
#          package, fsync on), or a PostgreSQL DSN.
# Environment:
#   TRANSPORT=https|mqtt   ATTESTATION=symmetric-key|x509   REPLICAS=1|2|…
#   RATE=N (open loop, N devices/s)   KEX=default|x25519|p256 (offered by devices)
#   BENCH_ARGS="…" (more edgeprovctl bench flags)
# Build first: make build.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
devices="${1:-10000}"; conc="${2:-128}"; pollwait="${3:--1s}"; store="${4:-bolt}"
transport="${TRANSPORT:-https}"; attestation="${ATTESTATION:-symmetric-key}"; replicas="${REPLICAS:-1}"
bin="$repo/bin"
scratch="$(mktemp -d)"; pids=(); pgpid=""; pgbin=""
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" || true; done
	if [[ -n "$pgpid" ]]; then
		runuser -u postgres -- "$pgbin/pg_ctl" -D "$scratch/pg/data" -m fast -w stop >/dev/null 2>&1 || kill -KILL "$pgpid"
		wait "$pgpid" || true
	fi
	rm -rf "$scratch"
}
trap cleanup EXIT

head -c 32 /dev/urandom | base64 >"$scratch/group.key"
# The X.509 group's CA: P-256, as a factory's device CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=edgeprov bench device CA" \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
	-keyout "$scratch/devca.key" -out "$scratch/devca.pem" 2>/dev/null
cat >"$scratch/enrollments.yaml" <<YAML
version: 1
enrollmentGroups:
  - enrollmentGroupId: bench
    registrationIdPrefixes: [bench-]
    attestation: {type: symmetricKey, symmetricKey: {keyFile: group.key}}
  - enrollmentGroupId: bench-x509
    attestation: {type: x509, x509: {signingCertificates: {primary: {certificateFile: devca.pem}}}}
YAML

storeblock=""
case "$store" in
bolt) ;;
postgres)
	# Debian's server, initdb in the scratch directory, a unix socket only.
	pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
	chmod 711 "$scratch" # the server's user must reach its directory
	mkdir "$scratch/pg"; chown postgres "$scratch/pg"; chmod 700 "$scratch/pg"
	runuser -u postgres -- "$pgbin/initdb" -D "$scratch/pg/data" -U edgeprov --auth=trust -E UTF8 --locale=C >/dev/null
	runuser -u postgres -- "$pgbin/postgres" -D "$scratch/pg/data" -k "$scratch/pg" -c listen_addresses= \
		-c max_connections=300 -c shared_buffers=256MB >"$scratch/pg.log" 2>&1 &
	pgpid=$!
	for _ in $(seq 1 200); do runuser -u postgres -- "$pgbin/psql" -h "$scratch/pg" -U edgeprov -d postgres -Atc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
	runuser -u postgres -- "$pgbin/createdb" -h "$scratch/pg" -U edgeprov edgeprov
	printf 'host=%s user=edgeprov dbname=edgeprov sslmode=disable\n' "$scratch/pg" >"$scratch/pg.dsn"
	storeblock=$'store:\n  type: postgres\n  postgres: {dsnFile: pg.dsn, maxConns: 64}'
	;;
*)
	printf '%s\n' "$store" >"$scratch/pg.dsn"
	storeblock=$'store:\n  type: postgres\n  postgres: {dsnFile: pg.dsn, maxConns: 64}'
	;;
esac

# Replica r lives in $scratch/r<r>; replicas after the first copy the first
# one's instance (TLS, policies, data key) as an operator would.
config() {
	cat <<YAML
version: 1
stateDir: state
catalog: ../enrollments.yaml
$storeblock
device: {listen: 127.0.0.1:0, hostNames: [localhost]}
mqtt: {listen: 127.0.0.1:0, webSocket: false, maxConnections: 100000}
throttling: {maxInFlight: 4096}
linkedHubs:
  - {name: hub-a, hostName: hub-a.bench.local}
  - {name: hub-b, hostName: hub-b.bench.local}
log: {level: warn}
YAML
}
for r in $(seq 1 "$replicas"); do
	dir="$scratch/r$r"; mkdir -p "$dir"
	config | sed 's#dsnFile: pg.dsn#dsnFile: ../pg.dsn#' >"$dir/edgeprovd.yaml"
	if [[ $r == 1 ]]; then
		"$bin/edgeprovd" init --config "$dir/edgeprovd.yaml" >/dev/null
	else
		mkdir -p "$dir/state"
		cp -r "$scratch/r1/state/tls" "$scratch/r1/state/secrets.key" "$dir/state/"
		[[ -d "$scratch/r1/state/policies" ]] && cp -r "$scratch/r1/state/policies" "$dir/state/"
	fi
done
addrs=""
for r in $(seq 1 "$replicas"); do
	dir="$scratch/r$r"
	"$bin/edgeprovd" run --config "$dir/edgeprovd.yaml" --ready-file "$dir/ready.json" 2>"$dir/log" &
	pids+=($!)
	for _ in $(seq 1 400); do [[ -s "$dir/ready.json" ]] && break; sleep 0.05; done
	[[ -s "$dir/ready.json" ]] || { cat "$dir/log" >&2; exit 1; }
	key=device; [[ "$transport" == mqtt ]] && key=mqtt
	addrs+="${addrs:+,}$(sed -E "s/.*\"$key\":\"([^\"]+)\".*/\\1/" "$dir/ready.json")"
done
scope="$(sed -E 's/.*"idScope":"([^"]+)".*/\1/' "$scratch/r1/ready.json")"

cred=(--group-key-file "$scratch/group.key" --prefix bench-)
[[ "$attestation" == x509 ]] && cred=(--x509-ca-cert "$scratch/devca.pem" --x509-ca-key "$scratch/devca.key" --prefix benchx-)
# shellcheck disable=SC2086
"$bin/edgeprovctl" bench --addr "$addrs" --transport "$transport" --ca-file "$scratch/r1/state/tls/ca.pem" --id-scope "$scope" \
	"${cred[@]}" --devices "$devices" --concurrency "$conc" --poll-wait "$pollwait" --rate "${RATE:-0}" \
	--key-exchange "${KEX:-default}" --ceiling ${BENCH_ARGS:-}
# CPU time (user + system) of the load generator (with its ceiling server and
# the set-up commands: bash's children so far) and of each daemon, to split the
# box between server and client.
times >"$scratch/times"
echo "load generator (user, system): $(tail -1 "$scratch/times")" >&2
tck="$(getconf CLK_TCK)"
for i in "${!pids[@]}"; do
	read -r -a st <"/proc/${pids[$i]}/stat"
	echo "edgeprovd replica $((i + 1)): $(( (st[13] + st[14]) * 1000 / tck )) ms CPU" >&2
done
