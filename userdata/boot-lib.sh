# --- shared by the first-boot scripts (userdata/boot-lib.sh) ---
log() { echo "hybrid-llm boot: $*" >&2; }

# put_file MODE PATH < content: replace PATH atomically with stdin.
put_file() {
  local mode=$1 path=$2 tmp
  install -d -m 0755 "$(dirname "$path")"
  tmp=$(mktemp "$path.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
}

# install_release NAME URL SHA256 MEMBER DEST: download a pinned release, refuse
# it unless its sha256 matches, install it (MEMBER of a .tar.gz, or the file
# itself when MEMBER is empty). A marker holding the digest makes a rerun a no-op.
install_release() {
  local name=$1 url=$2 sha256=$3 member=$4 dest=$5
  local marker=/var/lib/hybrid-llm/installed/$name work
  if [[ -x $dest && -f $marker && $(cat "$marker") == "$sha256" ]]; then
    log "$name already installed"
    return 0
  fi
  work=$(mktemp -d)
  curl --fail --silent --show-error --location --retry 10 --retry-delay 5 --retry-all-errors --connect-timeout 10 \
    --output "$work/download" "$url"
  if ! echo "$sha256  $work/download" | sha256sum --check --strict --quiet; then
    log "$name: checksum mismatch for $url, refusing it"
    rm -rf "$work"
    return 1
  fi
  if [[ -n $member ]]; then
    tar -xzf "$work/download" -C "$work"
    install -m 0755 "$work/$member" "$dest"
  else
    install -m 0755 "$work/download" "$dest"
  fi
  install -d -m 0755 "$(dirname "$marker")"
  echo "$sha256" >"$marker"
  rm -rf "$work"
  log "$name installed from $url"
}
