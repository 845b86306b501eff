#!/bin/bash
# Every start, before k3s: wait until the Nebula interface carries this host's
# overlay address (k3s binds its API and flannel to it).
set -euo pipefail
# Nebula sets the address when it starts, before any handshake (about 0.1 s after
# its start in bench runs), so a short poll lets k3s start right after it.
readonly IFACE="@@{iface}" ADDRESS="@@{address}" TIMEOUT=@@{timeout_seconds} POLL=0.2

until ip -4 -o addr show dev "$IFACE" 2>/dev/null | grep -qF " $ADDRESS/"; do
  if ((SECONDS >= TIMEOUT)); then
    echo "$IFACE has no address $ADDRESS after ${TIMEOUT}s" >&2
    exit 1
  fi
  sleep "$POLL"
done
