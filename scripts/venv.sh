# make_venv VENV REQUIREMENTS: a Python virtualenv with the pinned packages of
# REQUIREMENTS, rebuilt only when the file (or Python) changed. Sourced by
# scripts/test.sh and scripts/tempest.sh.
make_venv() {
    local venv=$1 requirements=$2 stamp
    stamp="$(python3 --version 2>&1) $(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ]; then
        printf '\n==> Python venv up to date (%s)\n' "$venv"
        return
    fi
    printf '\n==> creating Python venv at %s\n' "$venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || { echo "FAILED: python3 -m venv $venv" >&2; return 1; }
    "$venv/bin/pip" install --disable-pip-version-check --quiet -r "$requirements" \
        || { echo "FAILED: pip install -r $requirements" >&2; return 1; }
    echo "$stamp" >"$venv/.installed"
}
