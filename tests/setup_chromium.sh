#!/usr/bin/env bash
# Installs Debian's Chromium for the report rendering test (tests/test_report.py), once.
# Needs root (or sudo) and access to the Debian archive; a no-op when /usr/bin/chromium exists.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
