#!/usr/bin/env bash
# Builds server/dhcp/native/build/Release/ironboot_dhcp_native.node (SO_BINDTODEVICE for the DHCP sockets).
# Offline: uses the node-gyp bundled with npm and the machine's node headers (npm config nodedir, e.g. /usr
# on Debian with /usr/include/node). Falls back to a direct g++ call when node-gyp is unavailable.
# Needs: g++, python3 (for node-gyp), node headers (Debian: libnode-dev or nodejs headers in /usr/include/node).
set -euo pipefail
cd "$(dirname "$0")"
out=build/Release/ironboot_dhcp_native.node
if [[ "${1:-}" != "--force" && -f $out && $out -nt bind_to_device.cc && $out -nt binding.gyp ]]; then
  echo "dhcp native addon up to date: $PWD/$out"; exit 0
fi
nodedir=$(npm config get nodedir 2>/dev/null || true)
[[ -z "$nodedir" || "$nodedir" == "undefined" || "$nodedir" == "null" ]] && nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
incdir=""
for d in "$nodedir/include/node" /usr/include/node /usr/local/include/node; do
  [[ -f "$d/node_api.h" ]] && { incdir=$d; break; }
done
[[ -z "$incdir" ]] && { echo "dhcp native addon: node headers (node_api.h) not found under $nodedir/include/node or /usr/include/node" >&2; exit 1; }
gyp=""
for g in "$(npm root -g 2>/dev/null)/npm/node_modules/node-gyp/bin/node-gyp.js" \
         "$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js" \
         ../../../node_modules/node-gyp/bin/node-gyp.js; do
  [[ -f "$g" ]] && { gyp=$g; break; }
done
if [[ -n "$gyp" ]] && command -v python3 >/dev/null; then
  if node "$gyp" rebuild --nodedir="$(dirname "$(dirname "$incdir")")" --loglevel=warn; then
    echo "dhcp native addon built: $PWD/$out"; exit 0
  fi
  echo "node-gyp failed; trying g++ directly" >&2
fi
mkdir -p build/Release
g++ -O2 -Wall -shared -fPIC -std=c++17 -DNAPI_VERSION=8 -DNODE_GYP_MODULE_NAME=ironboot_dhcp_native \
  -I"$incdir" bind_to_device.cc -o "$out"
echo "dhcp native addon built (g++): $PWD/$out"
