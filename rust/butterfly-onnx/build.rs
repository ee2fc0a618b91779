//! `cfg(butterfly_avx512)` when the compiler has the AVX-512 target features and intrinsics
//! (stable since Rust 1.89; the crate's floor is 1.88): the resampler's VNNI kernel
//! (src/preprocess/resize/avx512.rs) is compiled only then, and chosen at run time by CPU
//! detection. The cfg is declared in the workspace's `[lints]` (Cargo.toml).

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("--version").output().ok().and_then(|o| String::from_utf8(o.stdout).ok());
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let minor = version
        .as_deref()
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo::rustc-cfg=butterfly_avx512");
    }
}
