#!/bin/bash
# First boot of GPU worker @@{host} (Deep Learning AMI, Ubuntu 22.04), rendered by
# components/gpu_worker.py. cloud-init runs user data once per instance, so this
# only installs pinned binaries, units and k3s manifests; the units do the
# per-start work (Nebula files and k3s CAs from SSM, the model volume, k3s after
# nebula1 is up). A start after a stop reinstalls nothing.
set -euo pipefail
umask 022

@@{boot_lib}

command -v aws >/dev/null || { log "the AWS CLI is missing from the AMI"; exit 1; }
command -v nvidia-smi >/dev/null || log "warning: nvidia-smi not found; is this the Deep Learning AMI?"
install_release nebula "@@{nebula_url}" "@@{nebula_sha256}" nebula /usr/local/bin/nebula
install_release k3s "@@{k3s_url}" "@@{k3s_sha256}" "" /usr/local/bin/k3s

@@{files}

systemctl daemon-reload
systemctl enable nebula.service k3s.service hybrid-llm-activity.timer hybrid-llm-nebula-refresh.timer
systemctl start --no-block k3s.service hybrid-llm-activity.timer hybrid-llm-nebula-refresh.timer
log "worker @@{host} ready to start nebula @@{nebula_version} and k3s @@{k3s_version}"
