#!/usr/bin/env bash
# Debian's chromium for the web client's tests (tests/e2e/test_web_client.py drives it
# with Playwright; Playwright's own browsers are never downloaded).  Prints the
# browser's path on stdout; as root installs Debian's `chromium` package when it is
# missing.  Messages go to stderr.
#
#   scripts/chromium.sh        prints e.g. /usr/bin/chromium
set -euo pipefail

say() { echo "chromium.sh: $*" >&2; }
die() { say "$*"; exit 1; }

found() { command -v chromium 2>/dev/null || true; }

browser="$(found)"
if [ -z "$browser" ]; then
    [ "$(id -u)" = 0 ] || die "no chromium and not root: install Debian's chromium package"
    command -v apt-get >/dev/null || die "no chromium and no apt-get to install it"
    say "installing Debian's chromium package"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends chromium >&2; then
        apt-get update -qq >&2 || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends chromium >&2 \
            || die "apt-get install chromium failed"
    fi
    browser="$(found)"
    [ -n "$browser" ] || die "installed chromium, but there is no chromium command"
fi
echo "$browser"
