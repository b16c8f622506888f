#!/usr/bin/env bash
# Installs what edgeprov's test suite needs on a Debian 12 machine, as root:
# the Debian packages (swtpm, tpm2-tools, SoftHSM2, mosquitto, PostgreSQL,
# a C toolchain for cgo, Node.js + npm, systemd's tools and dpkg for the
# packaging tests), the pinned Azure Node SDKs in testenv/node (npm ci), the Go
# modules (go mod download) and the pinned nfpm of make deb.
#
# Idempotent: installs only what is missing, so a second run changes nothing.
# The Go toolchain itself (the version in go.mod) must already be installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nodedir="$repo/testenv/node"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

packages=(swtpm swtpm-tools tpm2-tools softhsm2 mosquitto postgresql gcc libc6-dev ca-certificates
	systemd dpkg init-system-helpers make openssl)
# Node may come from elsewhere than Debian (e.g. a Node.js 20 build in
# /usr/bin that bundles npm): keep it when both commands are there.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	say "node $(node --version) and npm $(npm --version) already on PATH"
else
	packages+=(nodejs npm)
fi

installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for p in "${packages[@]}"; do
	if ! installed "$p"; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	[[ "$(id -u)" == 0 ]] || die "need root to install: ${missing[*]}"
	say "apt-get update"
	apt-get update -q
	say "installing ${missing[*]}"
	apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	say "Debian packages already installed"
fi

command -v node >/dev/null 2>&1 || die "node still not on PATH"
command -v npm >/dev/null 2>&1 || die "npm still not on PATH"

# Same lock and staleness rule as testenv/nodesdk.Ensure: npm writes
# node_modules/.package-lock.json at the end of an install.
exec 9>"$nodedir/.ensure.lock"
flock 9
stamp="$nodedir/node_modules/.package-lock.json"
if [[ ! -f "$stamp" || "$nodedir/package-lock.json" -nt "$stamp" || "$nodedir/package.json" -nt "$stamp" ]]; then
	say "npm ci in testenv/node"
	(cd "$nodedir" && npm ci --no-audit --no-fund)
else
	say "testenv/node/node_modules up to date"
fi
exec 9>&-

if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH="/usr/local/go/bin:$PATH"
	else
		die "go not on PATH: install the Go toolchain named in go.mod, then re-run"
	fi
fi
say "go mod download ($(go version | cut -d' ' -f3))"
(cd "$repo" && go mod download)
# make deb (and its test) runs nfpm pinned in the Makefile; build it once here.
nfpm="$(sed -n 's/^NFPM := //p' "$repo/Makefile")"
say "go run $nfpm --version"
(cd "$repo" && go run "$nfpm" --version >/dev/null)

say "done"
