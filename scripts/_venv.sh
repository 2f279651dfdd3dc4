# Sourced by scripts/test and scripts/demo: make .venv with the project installed.
# Re-installs only when pyproject.toml or setup.py changed since the last install.
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "callrouter needs Python 3.11 or newer ($PYTHON is older or missing)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing Debian's python3-venv" >&2
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv .venv
        else
            echo "cannot create a virtualenv: install python3-venv" >&2
            exit 1
        fi
    fi
fi
stamp=.venv/.callrouter-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # Playwright (a test dependency) drives Debian's chromium: no browser download.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
