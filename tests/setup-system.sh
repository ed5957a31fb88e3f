#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when they are missing and we can
# (root with apt-get). Elsewhere it says what is missing; those tests then skip (and
# fail in CI, where this script must succeed).
set -euo pipefail
packages=(bindfs git openssh-server sqlite3)
# The phase sandbox (control/worker/sandbox.py).
packages+=(bubblewrap)
# The dashboard's browser tests (tests/integration/test_dashboard_browser.py).
packages+=(chromium chromium-driver)
# The test fleet (tests/fleet): containers, the base image, its proxy, its network.
packages+=(systemd-container debootstrap tinyproxy-bin zstd iproute2 openssh-client nftables)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# npm builds the fleet's Node tarball; any npm will do (NodeSource's nodejs ships one).
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-system: missing ${missing[*]} (need root and apt-get); tests that need them will skip" >&2
  exit 0
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
