#!/usr/bin/env bash
# System libraries NeuroWorkbench needs on Debian/Ubuntu: Qt's xcb platform plugin, OpenGL
# (Mesa, for vispy's 3D views), fonts, and Xvfb for running headless (demo screenshots, tests).
# Installs what is missing when it can (root or password-less sudo, with apt-get); otherwise
# prints the exact command to run and exits non-zero. Quick no-op when everything is there.
set -euo pipefail

PACKAGES=(
  xvfb                    # virtual X display: headless demo and GUI tests
  xauth                   # xvfb-run needs it
  libgl1                  # libGL.so.1, loaded by vispy and Qt's OpenGL widgets
  libgl1-mesa-dri         # Mesa's software rasterizer (llvmpipe) behind GLX on Xvfb
  libegl1                 # libEGL.so.1, linked by Qt's xcb-gl integration
  libglib2.0-0            # libglib-2.0.so.0, linked by QtCore (glib event dispatcher)
  libxkbcommon-x11-0      # keyboard handling of the xcb platform plugin
  libxcb-cursor0          # required by Qt >= 6.5's xcb plugin
  libxcb-icccm4
  libxcb-image0
  libxcb-keysyms1
  libxcb-randr0
  libxcb-render-util0
  libxcb-shape0
  libxcb-xinerama0
  libxcb-xkb1
  libxcb-xfixes0
  libdbus-1-3             # linked by QtDBus / the xcb plugin
  libfontconfig1          # font discovery
  fonts-dejavu-core       # at least one font, or every label renders as boxes
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  if command -v Xvfb >/dev/null 2>&1; then
    echo "system-deps: not a Debian-like system; found Xvfb, assuming Qt/OpenGL libraries are present."
    exit 0
  fi
  echo "system-deps: not a Debian-like system and Xvfb is missing." >&2
  echo "Install your distribution's equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system-deps: all ${#PACKAGES[@]} system packages present."
  exit 0
fi

install_cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "system-deps: missing system packages: ${missing[*]}" >&2
  echo "system-deps: cannot install them without root. Run this, then try again:" >&2
  echo "  sudo sh -c '$install_cmd'" >&2
  exit 1
fi

echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/neurowb-apt.log 2>&1; then
  # Package lists may be missing or stale on a fresh machine: refresh once and retry.
  "${sudo[@]}" apt-get update >>/tmp/neurowb-apt.log 2>&1 || true
  if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/neurowb-apt.log 2>&1; then
    tail -n 20 /tmp/neurowb-apt.log >&2
    echo "system-deps: apt-get failed (log: /tmp/neurowb-apt.log). Try by hand:" >&2
    echo "  sudo sh -c '$install_cmd'" >&2
    exit 1
  fi
fi
echo "system-deps: done."
