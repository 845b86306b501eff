#!/bin/bash
# Every start, before k3s: wait until the Nebula interface carries this host's
# overlay address (k3s binds its API and flannel to it).
set -euo pipefail
readonly IFACE="@@{iface}" ADDRESS="@@{address}" TIMEOUT=@@{timeout_seconds}

waited=0
until ip -4 -o addr show dev "$IFACE" 2>/dev/null | grep -qF " $ADDRESS/"; do
  if ((waited >= TIMEOUT)); then
    echo "$IFACE has no address $ADDRESS after ${TIMEOUT}s" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
