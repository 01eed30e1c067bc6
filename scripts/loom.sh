#!/usr/bin/env bash
# Model-checks the session table's slot protocol with loom (every interleaving of the tests in
# dataplane/src/session.rs, loom_tests). Own target directory: --cfg loom rebuilds everything.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p sluice-dataplane --lib --release loom_tests "$@"
