// Package packaging holds edgeprov's systemd units, sysusers.d and tmpfiles.d
// files, the packaged configuration, the Debian maintainer scripts and the nfpm
// recipes of `make deb`; its tests verify the units with systemd-analyze and
// build, inspect and install the packages into a scratch root.
package packaging
