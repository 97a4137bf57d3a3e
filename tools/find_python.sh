#!/bin/sh
# Print the path of a Python interpreter that runs, given a command name such as python3.13 (used by the Makefile's
# PYTHON=...). A pyenv shim only runs the versions pyenv has selected; when the name does not run, the versions pyenv
# has installed are searched (newest first). Prints nothing when none is found.
set -u
name="${1:?usage: find_python.sh PYTHON}"
if "$name" -c "pass" >/dev/null 2>&1; then
    "$name" -c "import sys; print(sys.executable)"
    exit 0
fi
if command -v pyenv >/dev/null 2>&1; then
    root="$(pyenv root)"
    for exe in $(ls -d "$root"/versions/*/bin/"$name" 2>/dev/null | sort -V -r); do
        if "$exe" -c "pass" >/dev/null 2>&1; then
            echo "$exe"
            exit 0
        fi
    done
fi
