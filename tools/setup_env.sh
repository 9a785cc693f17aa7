#!/usr/bin/env bash
# Create or refresh seg_zoo's virtual environment (.venv) and build seg_zoo._C into it.
#
# Idempotent: each step records a hash of its inputs in .venv/.seg_zoo_setup; a step whose inputs
# (requirements.txt, this script, setup.py, csrc/**, build environment) did not change is skipped,
# so a re-run takes seconds. Used by `make demo`, `make test` and `make bench`.
#
# Steps: venv -> torch -> requirements.txt -> detectron2 -> seg_zoo (pip install -e .)
# detectron2 (not on PyPI) comes by the first route that applies: (1) an upstream detectron2 that
# already imports; (2) else upstream from its git repository, when reachable; (3) else the PyPI
# wheel sal-detectron2 (a snapshot of upstream's python sources) repacked as a pure-python wheel.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
export GIT_TERMINAL_PROMPT=0

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.seg_zoo_setup"
CACHE=.cache

TORCH_SPEC=(torch==2.14.1 torchvision==0.29.1)
D2_GIT=https://github.com/facebookresearch/detectron2
D2_PYPI_NAME=sal-detectron2
D2_PYPI_VERSION=0.7.2
# sha256 of sal_detectron2-0.7.2-cp310-none-any.whl as published on PyPI.
D2_PYPI_SHA256=491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561
D2_REPACKED="$CACHE/wheels/sal_detectron2-${D2_PYPI_VERSION}-py3-none-any.whl"

T0=$SECONDS
TMP_DIRS=()
trap 'rm -rf "${TMP_DIRS[@]}"' EXIT
say() { printf 'setup_env: %s\n' "$*"; }
die() {
    printf 'setup_env: ERROR: %s\n' "$*" >&2
    exit 1
}

# pip, quiet, minus this machine's harmless warnings about missing local index folders.
pip_q() {
    local rc=0
    "$PY" -m pip "$@" -q 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
    rc=${PIPESTATUS[0]}
    return "$rc"
}

hash_of() { # hash_of STRING [FILE...]: short hash of a string and the contents of files
    local s=$1
    shift
    { printf '%s\n' "$s"; for f in "$@"; do printf '%s\n' "$f"; cat "$f"; done; } \
        | sha256sum | cut -c1-16
}
stamp_get() { [[ -f "$STAMP" ]] && awk -v k="$1" '$1 == k { print $2; exit }' "$STAMP" || true; }
stamp_set() {
    local tmp="$STAMP.tmp"
    { [[ -f "$STAMP" ]] && awk -v k="$1" '$1 != k' "$STAMP" || true; printf '%s %s\n' "$1" "$2"; } > "$tmp"
    mv "$tmp" "$STAMP"
}
stamp_del() { [[ -f "$STAMP" ]] && stamp_set "$1" "-" || true; }

SCRIPT_HASH=$(hash_of "" tools/setup_env.sh)

# One set-up at a time (e.g. `make test` and `make demo` started together).
mkdir -p "$CACHE"
if command -v flock > /dev/null; then
    exec 9> "$CACHE/setup_env.lock"
    if ! flock -n 9; then
        say "waiting for another setup_env.sh to finish"
        flock 9
    fi
fi

# ---- 1. venv ----------------------------------------------------------------------------------
if [[ -x "$PY" ]] && "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2> /dev/null; then
    say "[1/5] venv: reusing $VENV ($("$PY" -V 2>&1))"
elif [[ -e "$VENV" ]]; then
    die "$VENV exists but $PY does not run (or is older than 3.10); remove $VENV and re-run"
else
    command -v python3 > /dev/null || die "python3 not found"
    python3 -m venv "$VENV"
    say "[1/5] venv: created $VENV ($("$PY" -V 2>&1))"
fi

# What is installed, read from package metadata (fast: nothing is imported).
# Lines: torch <v> / torchvision <v> / d2 <distribution owning `detectron2` or none> / seg_zoo <v>
probe() {
    "$PY" - << 'EOF'
import importlib.metadata as md
import importlib.util


def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "none"


print("torch", version("torch"))
print("torchvision", version("torchvision"))
d2 = "none"
if importlib.util.find_spec("detectron2") is not None:
    owners = md.packages_distributions().get("detectron2", [])
    d2 = owners[0] if owners else "unknown"  # e.g. a source checkout on PYTHONPATH
print("d2", d2)
print("seg_zoo", version("seg_zoo"))
EOF
}
declare -A HAVE
reprobe() { while read -r k v; do HAVE[$k]=$v; done < <(probe); }
reprobe

# ---- 2. torch ---------------------------------------------------------------------------------
want=$(hash_of "${TORCH_SPEC[*]} $SCRIPT_HASH")
if [[ "$(stamp_get torch)" == "$want" && "${HAVE[torch]}" != none && "${HAVE[torchvision]}" != none ]]
then
    say "[2/5] torch: unchanged (torch ${HAVE[torch]}, torchvision ${HAVE[torchvision]})"
else
    pip_q install "${TORCH_SPEC[@]}"
    stamp_set torch "$want"
    # Anything built against the previous torch must be rebuilt.
    stamp_del seg_zoo
    reprobe
    say "[2/5] torch: installed torch ${HAVE[torch]}, torchvision ${HAVE[torchvision]}"
fi

# ---- 3. requirements.txt ----------------------------------------------------------------------
want=$(hash_of "$SCRIPT_HASH" requirements.txt)
if [[ "$(stamp_get requirements)" == "$want" ]]; then
    say "[3/5] requirements: unchanged"
else
    pip_q install -r requirements.txt
    stamp_set requirements "$want"
    say "[3/5] requirements: installed requirements.txt"
fi

# ---- 4. detectron2 ----------------------------------------------------------------------------
repack_d2() { # download sal-detectron2 (cp310 tags) and repack it as a pure-python wheel
    local tmp whl root
    tmp=$(mktemp -d "$CACHE/d2-repack.XXXXXX")
    TMP_DIRS+=("$tmp")
    pip_q download --no-deps --only-binary=:all: --python-version 3.10 \
        --platform manylinux2014_x86_64 -d "$tmp/dl" "$D2_PYPI_NAME==$D2_PYPI_VERSION"
    whl=$(ls "$tmp"/dl/*.whl)
    [[ "$(sha256sum "$whl" | cut -d' ' -f1)" == "$D2_PYPI_SHA256" ]] \
        || die "$(basename "$whl"): sha256 differs from the one this script was written for"
    "$PY" -m wheel unpack -d "$tmp/unpacked" "$whl" > /dev/null
    root=$(ls -d "$tmp"/unpacked/*/)
    # Its tools/ would land in site-packages as a top-level package; its _C is built for
    # CPython 3.10 + CUDA 12 and cannot load here.
    rm -rf "$root/tools" "$root"/detectron2/_C.*.so
    local info="$root/sal_detectron2-$D2_PYPI_VERSION.dist-info"
    sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: true/' -e '/^Tag: /d' -e '/^[[:space:]]*$/d' "$info/WHEEL"
    printf 'Tag: py3-none-any\n' >> "$info/WHEEL"
    printf 'detectron2\n' > "$info/top_level.txt"
    mkdir -p "$tmp/packed"
    "$PY" -m wheel pack -d "$tmp/packed" "$root" > /dev/null
    mkdir -p "$(dirname "$D2_REPACKED")"
    mv "$tmp"/packed/*.whl "$D2_REPACKED"
}

want=$(hash_of "$SCRIPT_HASH")
d2_stamp=$(stamp_get detectron2) # "<route>:<hash>"
if [[ "${HAVE[d2]}" != none && "${d2_stamp#*:}" == "$want" ]]; then
    say "[4/5] detectron2: unchanged (route ${d2_stamp%%:*}, from ${HAVE[d2]})"
elif [[ "${HAVE[d2]}" == "$D2_PYPI_NAME" ]]; then
    # Installed by route 3 earlier; keep it (pip uninstall sal-detectron2 to choose again).
    "$PY" -c 'import detectron2' || die "the installed $D2_PYPI_NAME does not import"
    stamp_set detectron2 "3:$want"
    say "[4/5] detectron2: route 3, repacked $D2_PYPI_NAME already installed"
elif [[ "${HAVE[d2]}" != none ]]; then
    "$PY" -c 'import detectron2' \
        || die "detectron2 (from ${HAVE[d2]}) is installed but does not import; fix or uninstall it"
    stamp_set detectron2 "1:$want"
    say "[4/5] detectron2: route 1, using the upstream detectron2 already installed (${HAVE[d2]})"
elif command -v git > /dev/null && timeout 15 git ls-remote "$D2_GIT" HEAD > /dev/null 2>&1; then
    say "[4/5] detectron2: route 2, building upstream from $D2_GIT (takes minutes)"
    pip_q install --no-build-isolation "git+$D2_GIT.git" \
        || die "building upstream detectron2 failed; install it yourself, then re-run (route 1)"
    stamp_set detectron2 "2:$want"
    say "[4/5] detectron2: route 2, installed upstream from $D2_GIT"
else
    if [[ -f "$D2_REPACKED" ]]; then
        how="cached $D2_REPACKED"
    else
        repack_d2
        how="downloaded and repacked into $D2_REPACKED"
    fi
    pip_q install "$D2_REPACKED"
    stamp_set detectron2 "3:$want"
    say "[4/5] detectron2: route 3 (GitHub unreachable), $D2_PYPI_NAME==$D2_PYPI_VERSION, $how"
fi

# ---- 5. seg_zoo (editable, builds seg_zoo._C) -------------------------------------------------
[[ -f setup.py ]] || die "setup.py not found in $ROOT: cannot build seg_zoo (incomplete checkout?)"
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
    export CUDA_HOME=/usr/local/cuda
fi
export MAX_JOBS="${MAX_JOBS:-2}"
build_env="torch=${HAVE[torch]} CUDA_HOME=${CUDA_HOME:-} FORCE_CUDA=${FORCE_CUDA:-}"
build_env+=" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}"
mapfile -t csrc_files < <(find csrc -type f 2> /dev/null | LC_ALL=C sort)
want=$(hash_of "$SCRIPT_HASH $build_env" setup.py "${csrc_files[@]}")
so_built=$(compgen -G 'seg_zoo/_C*.so' || true)
if [[ "$(stamp_get seg_zoo)" == "$want" && "${HAVE[seg_zoo]}" != none && -n "$so_built" ]]; then
    say "[5/5] seg_zoo: unchanged (seg_zoo._C up to date)"
else
    say "[5/5] seg_zoo: building seg_zoo._C (MAX_JOBS=$MAX_JOBS${CUDA_HOME:+, CUDA_HOME=$CUDA_HOME})"
    pip_q install --no-build-isolation --no-deps -e .
    kernels=$("$PY" -W ignore -c 'import seg_zoo.layers as L
print("CPU + CUDA" if L.cuda_kernel_built() else "CPU only")') \
        || die "seg_zoo was installed but does not import"
    stamp_set seg_zoo "$want"
    say "[5/5] seg_zoo: installed in editable mode, seg_zoo._C built ($kernels kernels)"
fi

say "done in $((SECONDS - T0))s; python: $PY"
