#!/bin/bash
# Every minute (hybrid-llm-activity.timer): publish how busy this worker is, for
# the scaler that stops it when idle. Activity = models Ollama holds loaded (it
# stays above 0 for OLLAMA_KEEP_ALIVE after the last request); GpuUtilization =
# the busiest GPU in percent. What cannot be measured counts as idle, so a broken
# probe never keeps a GPU running.
set -euo pipefail
readonly REGION="@@{region}" NAMESPACE="@@{namespace}"
readonly OLLAMA_SELECTOR="@@{ollama_selector}" OLLAMA_PORT=@@{ollama_port}
readonly IMDS=http://169.254.169.254/latest

token=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$IMDS/api/token")
instance_id=$(curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/instance-id")

loaded_models() {
  local total=0 ip count
  for ip in $(k3s kubectl get pods --all-namespaces --selector "$OLLAMA_SELECTOR" \
      --field-selector status.phase=Running \
      --output 'jsonpath={.items[*].status.podIP}' 2>/dev/null || true); do
    count=$(curl -sf --max-time 5 "http://$ip:$OLLAMA_PORT/api/ps" |
      python3 -c 'import json, sys; print(len(json.load(sys.stdin).get("models") or []))' \
      2>/dev/null) || count=0
    total=$((total + count))
  done
  echo "$total"
}

gpu_utilization() {
  local busiest
  busiest=$(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null |
    sort -n | tail -n 1) || busiest=""
  [[ $busiest =~ ^[0-9]+$ ]] && echo "$busiest" || echo 0
}

activity=$(loaded_models)
gpu=$(gpu_utilization)
dimensions="[{\"Name\":\"InstanceId\",\"Value\":\"$instance_id\"}]"
aws cloudwatch put-metric-data --region "$REGION" --namespace "$NAMESPACE" --metric-data \
  "[{\"MetricName\":\"Activity\",\"Dimensions\":$dimensions,\"Value\":$activity,\"Unit\":\"Count\"},
    {\"MetricName\":\"GpuUtilization\",\"Dimensions\":$dimensions,\"Value\":$gpu,\"Unit\":\"Percent\"}]"
