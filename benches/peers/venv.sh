# The peers' virtualenv, shared by run.sh and autoattack.sh (sourced).
# Both functions log to stderr; the caller sets PIP options and `log`.

export PIP_DISABLE_PIP_VERSION_CHECK=1

# peers_venv_create VENV PYTHON: makes the virtualenv if there is none.
peers_venv_create() {
  if [ ! -x "$1/bin/python" ]; then
    echo "[peers] creating $1 with $($2 --version 2>&1)" >&2
    "$2" -m venv "$1" >&2
  fi
}

# peers_venv_install VENV REQUIREMENTS: installs the pinned requirements,
# again only when the file has changed since the last install (its hash is
# kept in the virtualenv).
peers_venv_install() {
  local want have start
  want="$(sha256sum "$2" | cut -d' ' -f1)"
  have="$(cat "$1/.requirements.sha256" 2>/dev/null || true)"
  if [ "$want" != "$have" ]; then
    echo "[peers] installing $2 into $1 (first run: ~3 GB from PyPI, a few minutes)" >&2
    start=$(date +%s)
    "$1/bin/python" -m pip install --only-binary :all: -r "$2" >&2
    echo "$want" > "$1/.requirements.sha256"
    echo "[peers] installed in $(( $(date +%s) - start )) s; venv size $(du -sh "$1" | cut -f1)" >&2
  fi
}
