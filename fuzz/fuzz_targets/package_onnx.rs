//! ONNX bytes as a package's segmenter graph, beside a valid audio encoder and manifest (the bundled
//! tiny-tpavi's, without a checksum for the segmenter): package loading and validation, then, for
//! what passes, preparing the graph with avseg's CPU kernels and running a clip through it.
//! Oracle: no panic, no abort; failures are errors naming the segmenter file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use avseg_runtime::{
    BackendChoice, ClipInput, Engine, EngineOptions, Frame, ModelPackage, PackageOptions, Pcm,
};
use libfuzzer_sys::fuzz_target;

#[path = "caught_panics.rs"]
mod caught_panics;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny-tpavi")
}

/// The manifest with the segmenter's size and checksum removed, and the audio encoder's bytes.
fn base() -> &'static (String, Vec<u8>) {
    static BASE: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let text = std::fs::read_to_string(tiny().join("avseg.json")).expect("tiny-tpavi manifest");
        let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
        let seg = m["graphs"]["segmenter"].as_object_mut().unwrap();
        seg.remove("size");
        seg.remove("checksum");
        (serde_json::to_string(&m).unwrap(), std::fs::read(tiny().join("audio_encoder.onnx")).unwrap())
    })
}

fuzz_target!(init: caught_panics::tolerate_caught_panics(), |data: &[u8]| {
    let (manifest, audio_encoder) = base();
    let Ok(dir) = tempfile::tempdir() else { return };
    let written = std::fs::write(dir.path().join("avseg.json"), manifest).is_ok()
        && std::fs::write(dir.path().join("audio_encoder.onnx"), audio_encoder).is_ok()
        && std::fs::write(dir.path().join("segmenter.onnx"), data).is_ok();
    if !written {
        return;
    }
    let mut options = PackageOptions::default();
    options.max_graph_bytes = 1 << 20;
    if let Err(e) = ModelPackage::load_with(dir.path(), &options) {
        let msg = e.to_string();
        assert!(msg.contains("segmenter.onnx") || msg.contains("avseg.json"), "error names no file: {msg}");
        return;
    }
    let mut engine_options = EngineOptions { backend: BackendChoice::Cpu, ..EngineOptions::default() };
    engine_options.package = options;
    let Ok(mut engine) = Engine::load(dir.path(), &engine_options) else { return };
    let frame = Frame { image: image_of(32, 24), source: dir.path().join("frame.png") };
    let clip = ClipInput {
        frames: vec![frame; 5],
        audio: Pcm { samples: vec![0.01; 16_000 * 5], rate: 16_000 },
        audio_source: dir.path().join("audio.wav"),
    };
    let _ = engine.run_clip(&clip);
});

fn image_of(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| [(x * 8) as u8, (y * 10) as u8, 128].into())
}
