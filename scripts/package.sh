#!/usr/bin/env bash
# Builds the Debian package `sluice` into dist/ and prints its path last: sluiced, sluicectl and
# sluice-agent (the release build), their man pages and bash/zsh/fish completions generated from
# their command-line definitions (sluice-pkg-gen, into dist/stage), the systemd units
# (packaging/systemd), the example pipelines and the docs; what goes where is control/Cargo.toml's
# [package.metadata.deb]. Installs cargo-deb, and dpkg-dev for the dependencies, if missing
# (apt-get: root). Reuses the release build in target/ (or $CARGO_TARGET_DIR), as scripts/setup.sh
# makes it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dpkg-shlibdeps >/dev/null; then
    echo "== apt-get install dpkg-dev (dpkg-shlibdeps: the package's dependencies)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== cargo install cargo-deb"
    cargo install --locked --quiet cargo-deb --version "^3"
fi

target="${CARGO_TARGET_DIR:-target}"
echo "== cargo build --release (as scripts/setup.sh builds it)"
cargo build --quiet --release --workspace --bins

echo "== man pages and completions (sluice-pkg-gen)"
rm -rf dist/stage
mkdir -p dist/stage
"$target/release/sluice-pkg-gen" dist/stage

variant=()
if compgen -G "control/monitoring/*" >/dev/null; then
    variant=(--variant monitoring)
fi
echo "== cargo deb ${variant[*]}"
rm -f dist/sluice_*.deb
cargo deb --quiet -p sluice-control --no-build "${variant[@]}" --output dist/ >/dev/null
debs=(dist/sluice_*.deb)
if [[ ${#debs[@]} -ne 1 || ! -f ${debs[0]} ]]; then
    echo "package.sh: expected one dist/sluice_*.deb, found: ${debs[*]}" >&2
    exit 1
fi
echo "${debs[0]}"
