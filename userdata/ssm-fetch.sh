#!/bin/bash
# Every start: copy this host's current parameters from SSM Parameter Store into
# files, so a renewed certificate or a changed lighthouse address reaches a
# stopped instance at its next start without replacing it.
#   hybrid-llm-ssm-fetch PREFIX DIR NAME:MODE...   (NAME may hold a subdirectory)
# This is on a worker's cold-start path (nebula waits for its four files, k3s for
# its eleven CA files), so it asks once per ten names (GetParameters' limit), all
# batches at once, instead of one CLI process and one round trip per file in a row.
# A batch that fails, or whose answer lacks a name, is asked again after 1, 2, 4,
# 8, then every 10 s, for up to BUDGET seconds in all; connect and read timeouts
# keep one try short (the CLI's own connect timeout is 60 s).
# Values go from the CLI's answer straight into files (0600 until chmod); nothing
# reaches the log or a shell variable.
set -euo pipefail
umask 077
readonly REGION="@@{region}"
readonly BUDGET=${HYBRID_LLM_FETCH_BUDGET:-300} BATCH=10

if (($# < 3)); then
  echo "usage: $0 PREFIX DIR NAME:MODE..." >&2
  exit 2
fi
prefix=$1 dir=$2
shift 2
for spec in "$@"; do
  if ! [[ $spec =~ ^[A-Za-z0-9._/-]+:[0-7]{3,4}$ ]]; then
    echo "usage: $0 PREFIX DIR NAME:MODE... (bad '$spec')" >&2
    exit 2
  fi
done

# Reads one GetParameters answer (JSON) on stdin and writes each asked name into
# DIR, atomically, with its mode; writes nothing and fails if a name is missing.
read -r -d '' WRITE_PY <<'PY' || true
import json, os, sys, tempfile
directory, prefix, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    answer = json.load(sys.stdin)
except ValueError:
    sys.exit(4)            # no answer: the CLI failed and said why on stderr
values = {p["Name"]: p["Value"] for p in answer.get("Parameters") or []}
wanted = [spec.rsplit(":", 1) for spec in specs]
missing = [name for name, _ in wanted if f"{prefix}/{name}" not in values]
if missing:
    print(f"not in SSM (yet): {' '.join(missing)}", file=sys.stderr)
    sys.exit(3)
for name, mode in wanted:
    target = os.path.join(directory, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".", dir=os.path.dirname(target))
    with os.fdopen(fd, "w") as out:
        out.write(values[f"{prefix}/{name}"] + "\n")    # as `--output text` printed it
    os.chmod(tmp, int(mode, 8))
    os.replace(tmp, target)
PY

deadline=$((SECONDS + BUDGET))

# fetch_batch NAME:MODE...: one GetParameters call for these names, retried.
fetch_batch() {
  local names=() spec pause=1
  for spec in "$@"; do
    names+=("$prefix/${spec%:*}")
  done
  # One attempt a try (the CLI would retry on its own), so the budget holds.
  until AWS_MAX_ATTEMPTS=1 aws ssm get-parameters --region "$REGION" --with-decryption --output json \
      --cli-connect-timeout 5 --cli-read-timeout 10 --names "${names[@]}" |
      python3 -c "$WRITE_PY" "$dir" "$prefix" "$@"; do
    if ((SECONDS + pause > deadline)); then
      echo "cannot read ${names[*]} within ${BUDGET}s" >&2
      return 1
    fi
    sleep "$pause"
    pause=$((pause * 2 > 10 ? 10 : pause * 2))
  done
}

specs=("$@") pids=()
for ((i = 0; i < ${#specs[@]}; i += BATCH)); do
  fetch_batch "${specs[@]:i:BATCH}" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
exit "$status"
