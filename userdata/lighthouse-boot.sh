#!/bin/bash
# First boot of the Nebula lighthouse (Amazon Linux 2023), rendered by
# components/lighthouse.py. cloud-init runs user data once per instance, so this
# only installs; the systemd units it writes do the per-start work (read the
# current certificate, key and config from SSM, then run nebula).
# Safe to run again: every step checks or replaces atomically.
set -euo pipefail
umask 022

@@{boot_lib}

command -v aws >/dev/null || { log "the AWS CLI is missing from the AMI"; exit 1; }
install_release nebula "@@{nebula_url}" "@@{nebula_sha256}" nebula /usr/local/bin/nebula

@@{files}

systemctl daemon-reload
systemctl enable nebula.service hybrid-llm-nebula-refresh.timer
systemctl start --no-block nebula.service hybrid-llm-nebula-refresh.timer
log "lighthouse ready to start nebula @@{nebula_version}"
