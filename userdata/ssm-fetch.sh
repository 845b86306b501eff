#!/bin/bash
# Every start: copy this host's current parameters from SSM Parameter Store into
# files, so a renewed certificate or a changed lighthouse address reaches a
# stopped instance at its next start without replacing it.
#   hybrid-llm-ssm-fetch PREFIX DIR NAME:MODE...   (NAME may hold a subdirectory)
# Values go straight into files (0600 until chmod); nothing reaches the log.
set -euo pipefail
umask 077
readonly REGION="@@{region}"
readonly ATTEMPTS=30 PAUSE=10

if (($# < 3)); then
  echo "usage: $0 PREFIX DIR NAME:MODE..." >&2
  exit 2
fi
prefix=$1 dir=$2
shift 2
for spec in "$@"; do
  name=${spec%:*} mode=${spec##*:}
  target=$dir/$name
  mkdir -p "$(dirname "$target")"
  tmp=$(mktemp "$target.XXXXXX")
  tries=0
  until aws ssm get-parameter --region "$REGION" --with-decryption --name "$prefix/$name" \
      --query Parameter.Value --output text >"$tmp"; do
    tries=$((tries + 1))
    if ((tries >= ATTEMPTS)); then
      rm -f "$tmp"
      echo "cannot read $prefix/$name after $ATTEMPTS tries" >&2
      exit 1
    fi
    sleep "$PAUSE"
  done
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$target"
done
