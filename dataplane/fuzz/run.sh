#!/usr/bin/env bash
# Runs the fuzz targets with libFuzzer for a while each: the dataplane's (wire, pipeline,
# worker, region; this directory) and the config parser's (config; control/fuzz, which links
# DPDK).
#
#   dataplane/fuzz/run.sh [seconds] [target...]  (default: 60 s each; wire pipeline worker
#                                                region config)
#
# Works with only a stable Rust toolchain: cargo-fuzz's nightly flags (-Zsanitizer=...) are
# accepted through RUSTC_BOOTSTRAP=1. Installs what it lacks (cargo-fuzz from crates.io, a C++
# compiler for libFuzzer from apt). Exits non-zero if any target crashed (or failed to build);
# the crashing input is in artifacts/<target>/ beside the target's Cargo.toml.
#
# Environment:
#   SANITIZER=none|address       default none (the dataplane core has no unsafe code; ASan
#                                roughly halves the speed); address also needs RUSTC_BOOTSTRAP
#   JOBS=N                       cargo build jobs, default 2
#   FUZZ_NO_CARGO_FUZZ=1         skip cargo-fuzz: build with plain `cargo build` and the
#                                sanitizer-coverage flags, run the binaries directly
#   FUZZ_ARGS="..."              extra libFuzzer flags (e.g. "-runs=10000000", "-dict=...")
#   FUZZ_TIMEOUT=S               an input running longer than S seconds is a crash (default 25)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

secs=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(wire pipeline worker region config)
sanitizer=${SANITIZER:-none}
export CARGO_BUILD_JOBS=${JOBS:-2}
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[fuzz] %s\n' "$*" >&2; }

# The fuzz crate of a target: the config parser's is apart, as it links DPDK.
crate_of() {
    case $1 in
        config) (cd "$here/../../control/fuzz" && pwd) ;;
        *) echo "$here" ;;
    esac
}

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    if ! have apt-get; then
        log "need $*: install it with your package manager"
        return 1
    fi
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    log "apt-get install $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# --- prerequisites ---------------------------------------------------------------------------
have cargo || { log "cargo not found: install Rust (rustup, stable)"; exit 2; }
# libfuzzer-sys compiles libFuzzer (C++) with the cc crate, which calls `c++` unless CXX says.
if [[ -z ${CXX:-} ]] && ! have c++; then
    if have clang++; then export CXX=clang++; elif have g++; then export CXX=g++; else apt_install g++; fi
fi
have cc || apt_install gcc # the linker rustc calls

use_cargo_fuzz=1
[[ ${FUZZ_NO_CARGO_FUZZ:-0} != 0 ]] && use_cargo_fuzz=0
if [[ $use_cargo_fuzz == 1 ]] && ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked --version '^0.13'; then
        log "cargo-fuzz did not install: falling back to a plain cargo build"
        use_cargo_fuzz=0
    fi
fi

# Seeds (committed; regenerate if missing).
if ! compgen -G "corpus/pipeline/golden-*" >/dev/null; then ./seed.sh; fi
if [[ " ${targets[*]} " == *" config "* ]] && ! compgen -G "$(crate_of config)/corpus/config/raw-*" >/dev/null; then
    "$(crate_of config)/seed.sh"
fi

# --- build -----------------------------------------------------------------------------------
triple=$(rustc -vV | sed -n 's/^host: //p')
if [[ $use_cargo_fuzz == 1 ]]; then
    log "cargo fuzz build (sanitizer: $sanitizer)"
    for t in "${targets[@]}"; do (cd "$(crate_of "$t")" && cargo fuzz build -s "$sanitizer" "$t"); done
else
    # What cargo-fuzz would pass, minus -Z flags unless ASan was asked for.
    flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
    flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
    flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth"
    flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"
    [[ $sanitizer == none ]] || flags+=" -Zsanitizer=$sanitizer"
    log "cargo build with sanitizer-coverage flags (sanitizer: $sanitizer)"
    for t in "${targets[@]}"; do
        dir=$(crate_of "$t")
        RUSTFLAGS="$flags" cargo build --release --manifest-path "$dir/Cargo.toml" --target "$triple" \
            --target-dir "$dir/target/direct" --bin "$t"
    done
fi

# --- run -------------------------------------------------------------------------------------
failed=()
summary=()
for t in "${targets[@]}"; do
    dir=$(crate_of "$t")
    cd "$dir"
    mkdir -p target/logs
    work="target/corpus/$t" # libFuzzer adds what it finds here; corpus/$t (seeds) is read only
    mkdir -p "$work" "corpus/$t" "artifacts/$t"
    args=(-max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-25}" -print_final_stats=1)
    args+=(-artifact_prefix="$dir/artifacts/$t/")
    # shellcheck disable=SC2206
    args+=(${FUZZ_ARGS:-})
    log "fuzzing $t for ${secs}s"
    rc=0
    if [[ $use_cargo_fuzz == 1 ]]; then
        cargo fuzz run -s "$sanitizer" "$t" "$work" "corpus/$t" -- "${args[@]}" 2>&1 | tee "target/logs/$t.log" || rc=$?
    else
        "$dir/target/direct/$triple/release/$t" "${args[@]}" "$work" "corpus/$t" 2>&1 | tee "target/logs/$t.log" || rc=$?
    fi
    # The last status line and libFuzzer's final stats.
    last=$(grep -E '^#[0-9]+' "target/logs/$t.log" | tail -n1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/logs/$t.log" | tail -n1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "target/logs/$t.log" | tail -n1)
    if [[ $rc -ne 0 ]] || grep -qE '^==[0-9]+== ERROR: libFuzzer|^SUMMARY: libFuzzer|panicked at' "target/logs/$t.log"; then
        failed+=("$t")
        summary+=("$t: CRASH (exit $rc), see $dir/target/logs/$t.log and $dir/artifacts/$t/")
    else
        summary+=("$t: ok, ${execs:-?} execs, ${speed:-?} exec/s; ${last#*	}")
    fi
done

log "summary (${secs}s per target):"
for s in "${summary[@]}"; do log "  $s"; done
if [[ ${#failed[@]} -gt 0 ]]; then
    log "crashed: ${failed[*]}"
    exit 1
fi
