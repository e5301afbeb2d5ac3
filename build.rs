//! Builds the emulated CUDA device (feature `cuda-emulated`): `kernels/*.cu` compiled for the host
//! as C++20 with `kernels/emu/shim.h`, through `src/backend/cuda/emulated.cpp`. Without the feature
//! this does nothing, so the C library and device builds carry none of it.
//!
//! A build whose target has no C++20 compiler (a cross `cargo check` without the target's g++)
//! gets a warning and the cfg `avseg_emulator_missing`; the emulated device then reports that it
//! was not built instead of failing the whole build.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(avseg_emulator_missing)");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA_EMULATED").is_none() {
        return;
    }
    #[cfg(feature = "cuda-emulated")]
    emulator();
}

#[cfg(feature = "cuda-emulated")]
fn emulator() {
    for f in ["kernels/emu/shim.h", "kernels/common.cuh", "kernels/decoder.cu", "kernels/tpavi.cu", "kernels/graph.cu", "kernels/preprocess.cu", "kernels/postprocess.cu", "src/backend/cuda/emulated.cpp"] {
        println!("cargo::rerun-if-changed={f}");
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .file("src/backend/cuda/emulated.cpp")
        .include("kernels")
        .include("kernels/emu")
        // The emulator runs every CUDA thread as a loop iteration: unoptimised it would take
        // minutes per model even in a debug build, so it is always optimised.
        .opt_level(2)
        .debug(false)
        // No FMA contraction: NVRTC's default contracts, but the emulator is held to tract, whose
        // kernels round each product.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-pthread")
        .warnings(false);
    match build.try_compile("avseg_emulated") {
        // cc links the C++ runtime itself (cargo:rustc-link-lib=stdc++).
        Ok(()) => {}
        Err(e) => {
            println!("cargo::warning=the emulated CUDA device is not built: {e}");
            println!("cargo::rustc-cfg=avseg_emulator_missing");
        }
    }
}
