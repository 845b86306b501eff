#!/bin/bash
# hybrid-llm activity agent: hybrid-llm-activity.timer runs it (a oneshot) at
# second 0 of every minute. One PutMetricData call (priced per request) carries
# three points for namespace @@{namespace}, dimension InstanceId, each stamped
# with the START of the minute the run describes, so a late point still lands in
# its own minute:
#   Activity        1 if this worker did GPU work in the minute, else 0 (the
#                   scaler reads the Maximum per minute; the homelab activator
#                   publishes the same metric for its requests in flight).
#   Ready           1 once this worker can serve since this boot, else 0: on the
#                   worker that runs Ollama (ready check "ollama"), once Ollama
#                   answered GET /api/version with HTTP 200; on the others
#                   ("k3s"), which take GPU pods of the user's own, once k3s
#                   answers /readyz. The marker lives in /run, a tmpfs that is
#                   empty after every start. The scaler's grace counts from the
#                   first Ready minute, and a worker never ready is stopped.
#   GpuUtilization  the highest reading of the minute in percent, for people:
#                   the figure the Activity rule compared.
# GPU work is either:
# - The GPU in use. nvidia-smi's utilization.gpu is the percent of time over the
#   last sample period (1/6 s to 1 s, by product) during which one or more
#   kernels ran on the GPU (NVML nvmlUtilization_t, nvidia-smi(1)). A model that
#   Ollama merely keeps loaded sits in memory and runs no kernels: 0 %. Prompt
#   evaluation and generation launch kernels back to back, so readings taken
#   during them are high. One reading a minute would miss short work, so the
#   agent takes one every @@{sample_every_seconds} s once the probes are done
#   until second @@{sample_until_second}, and the minute is busy if ANY reading of
#   any GPU reaches @@{gpu_busy_percent} %: far above idle (0), far below a
#   generating GPU, and a stray reading costs one extra minute at most. Work
#   that lasts a few seconds inside that span is seen; the rest of the minute
#   is left for the probes and the publish. Requests through the activator
#   count there whatever the agent sees.
# - A pod on this k3s, Running or scheduled and starting (pulling its image),
#   whose containers or init containers request or limit nvidia.com/gpu, other
#   than Ollama's (selector @@{ollama_selector}; Liqo keeps the labels on the
#   offloaded pod). The device plugin requests no GPU. A pod k3s cannot schedule
#   is not work here (only maxRunHours would end it).
# What cannot be measured counts as idle, so a broken probe never keeps a GPU
# billing; Ready is 1 only after a real 200. Every command has a time limit, so
# a run ends before the next minute's run (the unit's TimeoutStartSec too).
set -euo pipefail
export TZ=UTC
readonly REGION="@@{region}" NAMESPACE="@@{namespace}"
readonly OLLAMA_SELECTOR="@@{ollama_selector}" OLLAMA_PORT=@@{ollama_port}
readonly BUSY_PERCENT=@@{gpu_busy_percent} SAMPLE_EVERY=@@{sample_every_seconds} SAMPLE_UNTIL=@@{sample_until_second}
readonly READY_CHECK="@@{ready_check}"
readonly RUN_DIR="${HYBRID_LLM_RUN_DIR:-@@{run_dir}}"
readonly IMDS=http://169.254.169.254/latest
log() { echo "hybrid-llm-activity: $*" >&2; }

# The minute this run describes; SECONDS counts from here.
now=$(date +%s)
SECONDS=0
[[ $now =~ ^[0-9]+$ ]] || { log "no clock: $now"; exit 1; }
minute=$((now - now % 60))
printf -v stamp '%(%Y-%m-%dT%H:%M:%SZ)T' "$minute"
sample_end=$((minute + SAMPLE_UNTIL - now))
mkdir -p "$RUN_DIR"

token=$(curl -sf --connect-timeout 1 --max-time 2 -X PUT \
  -H "X-aws-ec2-metadata-token-ttl-seconds: 60" "$IMDS/api/token")
instance_id=$(curl -sf --connect-timeout 1 --max-time 2 \
  -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/instance-id")
[[ $instance_id =~ ^i-[0-9a-f]+$ ]] || { log "no instance id from IMDS"; exit 1; }

# Pods: prints "ollama IP" per Running pod matching the (equality-based) selector
# and "gpu_pods N" for the other pods that want a GPU and are Running, or Pending
# on a node (scheduled, starting).
read -r -d '' PODS_PY <<'PY' || true
import json, sys

def matches(labels, selector):
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            ok = labels.get(key) != value
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            ok = labels.get(key) == value
        else:
            ok = (term[1:].strip() not in labels) if term.startswith("!") else term in labels
        if not ok:
            return False
    return True

def wants_gpu(container):
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        try:
            if float((resources.get(kind) or {}).get("nvidia.com/gpu", 0)) > 0:
                return True
        except (TypeError, ValueError):
            pass
    return False

others = 0
for pod in json.load(sys.stdin).get("items") or []:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase")
    if matches((pod.get("metadata") or {}).get("labels") or {}, sys.argv[1]):
        if phase == "Running" and status.get("podIP"):
            print("ollama", status["podIP"])
    elif phase == "Running" or phase == "Pending" and spec.get("nodeName"):
        if any(wants_gpu(c) for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])):
            others += 1
print("gpu_pods", others)
PY
gpu_pods=0 ollama_ips=()
if pods=$(timeout -k 1 6 k3s kubectl get pods --all-namespaces \
    --field-selector=status.phase!=Succeeded,status.phase!=Failed \
    --request-timeout=5s --output=json 2>/dev/null | python3 -c "$PODS_PY" "$OLLAMA_SELECTOR"); then
  while read -r kind value; do
    if [[ $kind == ollama && $value =~ ^[0-9.]+$ ]]; then
      ollama_ips+=("$value")
    elif [[ $kind == gpu_pods && $value =~ ^[0-9]+$ ]]; then
      gpu_pods=$value
    fi
  done <<<"$pods"
else
  log "cannot list the pods: no GPU pods counted"
fi

ready=0
if [[ -e $RUN_DIR/ready ]]; then
  ready=1
elif [[ $READY_CHECK == k3s ]]; then
  if timeout -k 1 4 k3s kubectl get --raw=/readyz --request-timeout=3s >/dev/null 2>&1; then
    : >"$RUN_DIR/ready"
    ready=1
  fi
else
  for ip in "${ollama_ips[@]:0:3}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time 2 \
      "http://$ip:$OLLAMA_PORT/api/version") || code=000
    if [[ $code == 200 ]]; then
      : >"$RUN_DIR/ready"
      ready=1
      break
    fi
  done
fi

# The busiest GPU now, in percent; fails when no GPU gave a number.
gpu_reading() {
  local line busiest=-1
  while read -r line; do
    line=${line//[[:space:]]/}
    if [[ $line =~ ^[0-9]+$ ]] && ((line > busiest)); then
      busiest=$line
    fi
  done < <(timeout -k 1 4 nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null || true)
  ((busiest >= 0)) && echo "$busiest"
}

gpu_max=0 samples=0
if command -v nvidia-smi >/dev/null; then
  count=$(((sample_end - SECONDS) / SAMPLE_EVERY))
  ((count >= 1)) || count=1
  for ((i = 1; ; i++)); do
    if reading=$(gpu_reading); then
      samples=$((samples + 1))
      if ((reading > gpu_max)); then
        gpu_max=$reading
      fi
    fi
    ((i < count && SECONDS + SAMPLE_EVERY <= sample_end)) || break
    sleep "$SAMPLE_EVERY"
  done
else
  log "nvidia-smi not found: the GPU counts as idle"
fi

activity=0
if ((gpu_max >= BUSY_PERCENT || gpu_pods > 0)); then
  activity=1
fi
log "$stamp activity=$activity ready=$ready gpu=${gpu_max}% ($samples readings) gpu_pods=$gpu_pods"
dims="[{\"Name\":\"InstanceId\",\"Value\":\"$instance_id\"}]"
datum() {
  printf '{"MetricName":"%s","Dimensions":%s,"Timestamp":"%s","Value":%d,"Unit":"%s"}' \
    "$1" "$dims" "$stamp" "$2" "$3"
}
data="[$(datum Activity "$activity" Count),$(datum Ready "$ready" Count),$(datum GpuUtilization "$gpu_max" Percent)]"
AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=2 timeout -k 1 10 aws cloudwatch put-metric-data \
  --region "$REGION" --namespace "$NAMESPACE" --cli-connect-timeout 3 --cli-read-timeout 5 \
  --metric-data "$data"
