#!/bin/sh
# Set up a Debian machine to develop and test Eagle; safe to run again.
#
# As root, installs whichever Debian packages of the real parts used in tests are
# missing (apt-get update once, only then). Not as root, says which are missing and
# goes on. Then makes .venv if absent and installs Eagle into it with its test extras.
set -eu

PACKAGES="docker-registry skopeo podman docker.io containerd redis-server opentracker wrk curl
redis-sentinel debootstrap iproute2 supervisor python3-venv openssh-client
systemd chromium"

cd "$(dirname "$0")/.."

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "ok installed"
    then
        missing="$missing $package"
    fi
done

if [ -z "$missing" ]; then
    echo "Debian packages: all installed"
elif [ "$(id -u)" -eq 0 ]; then
    echo "Debian packages: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y $missing
else
    echo "Debian packages missing (run as root to install):$missing" >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Install again only when setup.py changed since the last install.
# compat mode puts the checkout itself on sys.path: trial then finds tests/ and twist
# finds twisted/plugins/ (the default editable mode maps only the packages).
stamp=.venv/.eagle-installed
wanted=$(sha256sum setup.py | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/pip install --config-settings editable_mode=compat -e '.[test,bench]'
    echo "$wanted" > "$stamp"
else
    echo "Python packages: installed (setup.py unchanged)"
fi
