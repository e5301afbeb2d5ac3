#!/usr/bin/env bash
# Installs the registry media AVS-Reg is generated from (idempotent; apt + PyPI only).
#   Debian: tuxpaint-stamps-default (cut-outs + sounds), sox + libsox-fmt-all (Ogg -> 16 kHz),
#           espeak-ng (speech), fluidsynth + timgm6mb-soundfont (instrument melodies).
#   PyPI:   the scikit-image and scikit-learn wheels, downloaded (not installed) with pip; only
#           their background photos are extracted into $AVSREG_SOURCES/pypi/.
# Needs root (or sudo) for apt. Nothing here is ever committed (GPL media).
# Environment: AVSREG_SOURCES (default ~/.cache/avseg/avsreg-sources), PYTHON (default python3).
set -euo pipefail
SRC=${AVSREG_SOURCES:-${XDG_CACHE_HOME:-$HOME/.cache}/avseg/avsreg-sources}
PY=${PYTHON:-python3}
DEBS="tuxpaint-stamps-default sox libsox-fmt-all espeak-ng fluidsynth timgm6mb-soundfont"

missing=""
for p in $DEBS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "avsreg: apt-get install$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

want="$SRC/pypi/skimage/brick.png $SRC/pypi/skimage/clock_motion.png $SRC/pypi/skimage/coffee.png
      $SRC/pypi/skimage/coins.png $SRC/pypi/skimage/grass.png $SRC/pypi/skimage/gravel.png
      $SRC/pypi/skimage/hubble_deep_field.jpg $SRC/pypi/skimage/rocket.jpg
      $SRC/pypi/sklearn/china.jpg $SRC/pypi/sklearn/flower.jpg"
need=0
for f in $want; do [ -f "$f" ] || need=1; done
if [ "$need" = 1 ]; then
  mkdir -p "$SRC/pypi/wheels"
  echo "avsreg: pip download scikit-image==0.26.0 scikit-learn==1.9.1 (data files only)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$SRC/pypi/wheels" scikit-image==0.26.0 scikit-learn==1.9.1
  "$PY" - "$SRC/pypi" <<'EOF'
import sys, zipfile, glob, os
root = sys.argv[1]
take = {"skimage/data/": ("skimage", ["brick.png", "clock_motion.png", "coffee.png", "coins.png", "grass.png",
                                      "gravel.png", "hubble_deep_field.jpg", "rocket.jpg"]),
        "sklearn/datasets/images/": ("sklearn", ["china.jpg", "flower.jpg", "README.txt"])}
for whl in sorted(glob.glob(os.path.join(root, "wheels", "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for prefix, (sub, names) in take.items():
            for n in names:
                if prefix + n in z.namelist():
                    os.makedirs(os.path.join(root, sub), exist_ok=True)
                    with open(os.path.join(root, sub, n), "wb") as f:
                        f.write(z.read(prefix + n))
EOF
  rm -rf "$SRC/pypi/wheels"
fi
for f in $want; do [ -f "$f" ] || { echo "avsreg: missing $f after install" >&2; exit 1; }; done
echo "avsreg: sources ready (apt packages; backgrounds in $SRC/pypi)"
