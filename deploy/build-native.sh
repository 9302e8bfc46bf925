#!/usr/bin/env bash
# Builds ironboot's native addons against this node's headers, offline:
#   server/dhcp/native  → ironboot_dhcp_native.node  (SO_BINDTODEVICE for the DHCP sockets)
#   server/tftp/native  → ironboot_tftp_native.node  (the TFTP transfer loop for files on disk)
#   server/images/native → ironboot_images_native.node (in-process gzip/zstd for image builds; needs libisal-dev libzstd-dev)
#   server/http/native   → ironboot_http_native.node   (sendfile(2) of response bodies, one thread for all)
# Usage: deploy/build-native.sh [--force] [DIR...]   (default: all four). An addon newer than its sources is kept.
# Uses the node-gyp bundled with npm and the node headers (npm config nodedir, /usr/include/node on Debian);
# falls back to a direct g++ call. Needs g++, python3 (node-gyp) and node_api.h.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
force=0
[[ "${1:-}" == "--force" ]] && { force=1; shift; }
dirs=("$@")
[[ ${#dirs[@]} -eq 0 ]] && dirs=("$root/server/dhcp/native" "$root/server/tftp/native" "$root/server/images/native" "$root/server/http/native")

nodedir=$(npm config get nodedir 2>/dev/null || true)
[[ -z "$nodedir" || "$nodedir" == "undefined" || "$nodedir" == "null" ]] && nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
incdir=""
for d in "$nodedir/include/node" /usr/include/node /usr/local/include/node; do
  [[ -f "$d/node_api.h" ]] && { incdir=$d; break; }
done
[[ -z "$incdir" ]] && { echo "native addons: node headers (node_api.h) not found under $nodedir/include/node or /usr/include/node" >&2; exit 1; }
gyp=""
for g in "$(npm root -g 2>/dev/null)/npm/node_modules/node-gyp/bin/node-gyp.js" \
         "$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js" \
         "$root/node_modules/node-gyp/bin/node-gyp.js"; do
  [[ -f "$g" ]] && { gyp=$g; break; }
done

for dir in "${dirs[@]}"; do
  cd "$dir"
  target=$(sed -n 's/.*"target_name": *"\([^"]*\)".*/\1/p' binding.gyp | head -1)
  mapfile -t sources < <(sed -n 's/.*"sources": *\[\(.*\)\].*/\1/p' binding.gyp | tr -d '" ' | tr ',' '\n')
  out=build/Release/$target.node
  fresh=1
  for f in binding.gyp "${sources[@]}"; do [[ -f $out && $out -nt $f ]] || fresh=0; done
  if [[ $force == 0 && $fresh == 1 ]]; then echo "$target up to date: $dir/$out"; continue; fi
  if [[ -n "$gyp" ]] && command -v python3 >/dev/null && node "$gyp" rebuild --nodedir="$(dirname "$(dirname "$incdir")")" --loglevel=warn; then
    echo "$target built: $dir/$out"; continue
  fi
  [[ -n "$gyp" ]] && echo "node-gyp failed for $target; trying g++ directly" >&2
  mkdir -p build/Release
  mapfile -t libs < <(sed -n 's/.*"libraries": *\[\(.*\)\].*/\1/p' binding.gyp | tr -d '" ' | tr ',' '\n' | grep . || true)
  if g++ -O2 -Wall -shared -fPIC -std=c++17 -DNAPI_VERSION=8 -DNODE_GYP_MODULE_NAME="$target" -I"$incdir" "${sources[@]}" "${libs[@]}" -o "$out"; then
    echo "$target built (g++): $dir/$out"
  else
    # the others are still built; what uses this one says so when it starts (DHCP refuses to start without its
    # addon; TFTP and image builds fall back to slower paths)
    rm -f "$out"
    echo "WARNING: $target could not be built (missing headers or libraries?); see the errors above" >&2
    failed=1
  fi
done
exit "${failed:-0}"
