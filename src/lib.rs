//! avseg: audio-visual segmentation at the edge.
//!
//! Given the frames of a clip and the sound at that moment, avseg returns the pixel mask of the
//! object(s) making the sound.
//!
//! Data flows one way through the (private) modules, and imports follow the same direction:
//!
//! ```text
//! io (decode) → frontend (audio, vision) → model (package) → backend (tract, CUDA) → post (masks, objects) → api
//! ```
//!
//! Everything a user needs is re-exported here:
//!
//! * **Clips:** [`Engine`] loads a model package once and runs [`ClipInput`]s (frames plus audio)
//!   through every stage, giving a [`ClipOutput`] with one [`FrameOutput`] per frame.
//! * **Live streams:** [`Session`] takes PCM and camera frames as they arrive and returns a
//!   [`StreamResult`] per sampled frame. [`segment_video`] drives one from a video file.
//! * **Files** (features `audio-files`, `image-files`, `video`): [`find_clip`], [`decode_audio`],
//!   [`decode_image`], [`probe_video`].
//! * **Pre-processing**, exactly as the published models were trained: [`AudioFrontend`] (VGGish
//!   log-mel patches) and [`VisionFrontend`] (resize and normalise).
//! * **Packages:** [`ModelPackage`] and its [`Manifest`].
//! * **Outputs:** [`FrameMask`], [`SoundingObject`] (box, area, centroid, confidence,
//!   [`bearing_deg`]) and the writers ([`FrameWriter`], [`JsonlWriter`], [`write_npy`]).
//! * **CUDA kernels:** [`build_kernels`] compiles every kernel with NVRTC (no GPU needed).
//! * **Errors:** one [`Error`] with an [`ErrorKind`]; each layer's own error is a variant.
//!
//! ```no_run
//! use avseg::{find_clip, ClipInput, Engine, EngineOptions};
//! let mut engine = Engine::load("models/default", &EngineOptions::default())?;
//! let clip = ClipInput::load(&find_clip("models/sample".as_ref())?)?;
//! for f in engine.run_clip(&clip)?.frames {
//!     println!("frame {} at {:.2} s: {} sounding object(s)", f.index, f.timestamp, f.objects.len());
//! }
//! # Ok::<(), avseg::Error>(())
//! ```
#![deny(missing_docs)]

mod api;
mod backend;
mod error;
mod frontend;
mod io;
mod model;
mod post;
mod tensor;

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

// Clips.
pub use api::{
    audio_seconds_for_patches, frame_tensor, BackendChoice, ClipFeatures, ClipInput, ClipOutput, DevicePrecision, Engine, EngineOptions, Frame, FrameOutput,
    StageTimes, FRAME_TIME_OFFSET_S,
};
// Live streams and video files.
pub use api::session::{Session, SessionOptions, SessionStats, StreamMode, StreamResult};
#[cfg(feature = "video")]
pub use api::video::{segment_video, VideoResult, VideoSummary};
// Input files.
#[cfg(feature = "audio-files")]
pub use io::audio::{decode_audio, decode_audio_bytes, decode_audio_with};
pub use io::limits::InputLimits;
pub use io::audio::{mix_to_mono, Pcm};
pub use io::clip::{find_clip, find_frames, ClipFiles, AUDIO_EXTENSIONS, FRAME_EXTENSIONS};
#[cfg(feature = "image-files")]
pub use io::image::{decode_image, decode_image_bytes, decode_image_bytes_with, decode_image_with};
#[cfg(feature = "video")]
pub use io::video::{decode_audio_track, probe as probe_video, AudioTrackInfo, VideoInfo};
// Pre-processing.
pub use frontend::audio::{mel_matrix, AudioFrontend, PatchPadding, MEL_BANDS, MIN_SAMPLES_16K, PATCH_FRAMES, TARGET_RATE};
pub use frontend::vision::{ResizeFilter, VisionConfig, VisionFrontend};
// Model packages.
pub use model::{
    AudioFrontendKind, AudioSpec, Dim, Family, FileCheck, GraphInfo, GraphSpec, Graphs, LabelTreeSpec, Manifest, ModelPackage,
    OutputSpec, PackageOptions, PixelRule, Provenance, TensorDecl, TwoStage, SCHEMA_VERSION,
};
// Outputs.
pub use post::mask::{binary_mask, semantic_mask, FrameMask, MaskBuilder};
/// The per-pixel softmax arg-max definition that the blocked post-processing path is tested and
/// benchmarked against (`benches/vision.rs`); not part of the supported API.
#[doc(hidden)]
pub use post::softmax::softmax_argmax_naive;
pub use post::objects::{bearing_deg, find_objects, ObjectFinder, ObjectSound, SoundingObject};
// Two-stage (BAVS-style) matching of candidate objects to audio tags through a label tree.
pub use model::label_tree::{LabelTree, ParentRule, TreeNode, LABEL_TREE_FORMAT, LABEL_TREE_VERSION};
pub use post::sound_match::{SoundMatcher, SoundSupport, Verdict};
#[cfg(feature = "image-files")]
pub use post::write::{write_mask_png, write_overlay_png, FrameWriter};
pub use post::write::{
    binary_colours, colour_table, voc_palette, write_npy, FrameInfo, FrameRecord, JsonlWriter, DEFAULT_OVERLAY_COLOUR,
};
// CUDA kernels.
pub use backend::cuda::build::{
    build_kernels, default_cache_dir, kernel_counts, KernelBuild, KernelBuildOptions, KernelBuildReport,
};
pub use backend::cuda::Arch;
pub use backend::cuda::plan::{plan_package, Kernel as DeviceKernel, Plan as DevicePlan, Precision};
// Errors and tensors.
pub use backend::cuda::CudaError;
pub use backend::cpu::CpuKernels;
pub use backend::{BackendError, DeviceReport, OpTime};
pub use error::{Error, ErrorKind};
pub use frontend::FrontendError;
pub use io::DecodeError;
pub use model::integrity::{checksum_bytes, checksum_file};
pub use model::PackageError;
pub use post::PostError;
pub use tensor::Tensor;
