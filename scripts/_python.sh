# Sourced by the other scripts: picks a Python 3.11 or 3.12 interpreter (bytewax 0.21.1 needs
# one of them; other versions silently resolve to an ancient bytewax) and prepares .venv.
find_python() {
  local candidate
  for candidate in "${NOVACRON_PYTHON:-}" python3.12 python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "novacron-ml needs Python 3.11 or 3.12 (set NOVACRON_PYTHON to one)" >&2
  return 1
}

ensure_venv() {
  local extras="$1"
  local venv="${NOVACRON_VENV:-.venv}"
  if [[ ! -x "$venv/bin/python" ]]; then
    "$(find_python)" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
  fi
  # Reinstall only when pyproject.toml (dependencies, entry points) changed since the last
  # install of these extras: the package itself is editable, code changes need no install.
  local stamp="$venv/.novacron-installed${extras//[^a-z,]/}"
  local want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    local size="a few hundred MB: Bytewax, River, ONNX Runtime, confluent-kafka, numpy"
    [[ "$extras" == *train* ]] && size="about 6 GB: PyTorch from PyPI brings its CUDA libraries"
    echo "installing novacron-ml${extras} into $venv (the first time it downloads $size)" >&2
    if ! "$venv/bin/python" -m pip install --quiet -e ".${extras}" 2>"$venv/pip-install.log"; then
      cat "$venv/pip-install.log" >&2
      return 1
    fi
    echo "$want" > "$stamp"
  fi
  echo "$venv"
}
