# Shared by scripts/serve and scripts/test: a Python 3.11+ virtual environment in ./.venv.
# Debian packages are installed with apt-get when running as root (as on a fresh Debian 12).

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "ourmail: please install these Debian packages first: ${missing[*]}" >&2
    exit 1
  fi
  echo "ourmail: installing Debian packages: ${missing[*]}" >&2
  # slapd is only a test peer: no system directory is to be configured or started.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections 2>/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "ourmail: needs Python 3.11 or newer as python3" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    # Debian's python3 has no venv/ensurepip until python3-venv is installed.
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
}
