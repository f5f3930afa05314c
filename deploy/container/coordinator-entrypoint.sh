#!/bin/sh
# Container entry point: creates the fleet PKI on the state volume at the first start (the
# server certificate names localhost, 127.0.0.1 and each of $FLEET_SERVER_NAMES), then runs the
# coordinator in the foreground with the packaged config; extra arguments go to it.
set -eu
state=/var/lib/fleetfl-coordinator
set -- --config /etc/fleetfl/coordinator.yaml --state-dir "$state" "$@"
names=""
for n in ${FLEET_SERVER_NAMES:-}; do names="$names --server-name $n"; done
# shellcheck disable=SC2086 # one --server-name per word
fleet-coordinator init --if-missing --state-dir "$state" --server-name localhost $names
exec fleet-coordinator "$@"
