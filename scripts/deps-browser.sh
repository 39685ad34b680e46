#!/bin/sh
# deps-browser.sh — installs what the browser tests need: Debian's chromium
# and playwright-core from npm (into tests/browser/node_modules, never committed).
# Called by `make test` (through TEST_PREREQS in mk/web.mk); a no-op when all is there.
set -e
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
# node and npm may come from Debian or be preinstalled (e.g. nodesource, whose
# nodejs bundles npm and conflicts with Debian's npm): install only when absent.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
    echo "deps-browser: installing$missing"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq $missing >/dev/null
fi
# Reactions are emoji: without a colour emoji font the screenshots show
# boxes. Nice to have, so a failure to install it is not fatal.
if [ ! -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
    echo "deps-browser: installing fonts-noto-color-emoji (optional)"
    { [ -n "$missing" ] || $SUDO apt-get update -qq; } && $SUDO apt-get install -y -qq fonts-noto-color-emoji >/dev/null ||
        echo "deps-browser: fonts-noto-color-emoji not installed (screenshots will lack emoji)" >&2
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "deps-browser: /usr/bin/chromium is missing after install" >&2
    exit 1
fi

dir=tests/browser
if [ ! -d "$dir/node_modules/playwright-core" ] || [ "$dir/package.json" -nt "$dir/node_modules" ]; then
    echo "deps-browser: npm install in $dir"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    touch "$dir/node_modules"
fi
