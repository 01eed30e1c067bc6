//! Build script for dpdk-sys.
//!
//! 1. Finds the system DPDK with pkg-config (`libdpdk`) and tells cargo how
//!    to link it (shared libraries, so EAL can load its PMD plugins itself).
//! 2. Compiles `src/shim.c` (exported wrappers around DPDK's `static inline`
//!    functions and bit-flag macros) with DPDK's own cflags.
//! 3. Runs bindgen over `src/wrapper.h` into `$OUT_DIR/bindings.rs`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Types emitted as opaque byte blobs (right size and alignment, no fields).
/// None of them is used by the safe layer.
/// * `rte_l2tpv2_combined_msg_hdr` (reached through rte_ethdev.h ->
///   rte_flow.h): a `__rte_packed` struct containing an aligned bit-field
///   union; Rust rejects it (E0588). Required.
/// * `rte_arp_hdr`, `rte_arp_ipv4`: the same packed-around-aligned problem;
///   not reachable from wrapper.h today, listed so adding rte_arp.h works.
/// * `rte_gtp_psc_*`: packed bit-field tunnel headers that break with some
///   bindgen/DPDK combinations; they compile here, but nothing needs their
///   fields, so they stay opaque.
const OPAQUE_TYPES: &[&str] = &[
    "rte_l2tpv2_combined_msg_hdr",
    "rte_arp_hdr",
    "rte_arp_ipv4",
    "rte_gtp_psc_generic_hdr",
    "rte_gtp_psc_type0_hdr",
    "rte_gtp_psc_type1_hdr",
];

/// Extra compiler flags from `pkg-config --cflags libdpdk` that are not
/// include paths or defines (those come from the pkg-config crate):
/// in practice `-include rte_config.h` and `-march=...`.
fn extra_cflags() -> Vec<String> {
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = Command::new(&pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| panic!("running `{pkg_config} --cflags libdpdk`: {e}"));
    assert!(
        out.status.success(),
        "`{pkg_config} --cflags libdpdk` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("pkg-config output is not UTF-8");
    let mut flags = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-include" {
            if let Some(file) = words.next() {
                flags.push(word.to_string());
                flags.push(file.to_string());
            }
        } else if !word.starts_with("-I") && !word.starts_with("-D") {
            flags.push(word.to_string());
        }
    }
    flags
}

fn main() {
    println!("cargo:rerun-if-changed=src/wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");

    // Emits the cargo:rustc-link-lib / -search lines for the shared libs.
    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .expect("libdpdk not found by pkg-config (install libdpdk-dev)");
    let extra = extra_cflags();

    // Let dependents (links = "dpdk") find the headers: DEP_DPDK_INCLUDE.
    let includes: Vec<String> = dpdk.include_paths.iter().map(|p| p.display().to_string()).collect();
    println!("cargo:include={}", includes.join(":"));

    // --- C shim ---
    let mut build = cc::Build::new();
    build.file("src/shim.c").include("src").warnings(true);
    for path in &dpdk.include_paths {
        build.include(path);
    }
    for (name, value) in &dpdk.defines {
        build.define(name, value.as_deref());
    }
    for flag in &extra {
        build.flag(flag);
    }
    build.compile("dpdk_sys_shim");

    // --- bindgen ---
    let mut clang_args: Vec<String> = Vec::new();
    for path in &dpdk.include_paths {
        clang_args.push(format!("-I{}", path.display()));
    }
    for (name, value) in &dpdk.defines {
        match value {
            Some(v) => clang_args.push(format!("-D{name}={v}")),
            None => clang_args.push(format!("-D{name}")),
        }
    }
    clang_args.extend(extra);
    clang_args.push("-Isrc".to_string());

    let mut builder = bindgen::Builder::default()
        .header("src/wrapper.h")
        .clang_args(&clang_args)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate_comments(false)
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .allowlist_function("rte_.*|shim_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|shim_.*|SOCKET_ID_ANY|LCORE_ID_ANY");
    for ty in OPAQUE_TYPES {
        builder = builder.opaque_type(ty);
    }
    let bindings = builder.generate().expect("bindgen failed on src/wrapper.h");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR not set"));
    bindings.write_to_file(out.join("bindings.rs")).expect("writing bindings.rs");
}
