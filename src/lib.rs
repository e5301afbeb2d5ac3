//! avseg: audio-visual segmentation at the edge.
//!
//! Given the frames of a clip and the sound at that moment, avseg returns the pixel mask of the
//! object(s) making the sound.
//!
//! Data flows one way through the modules, and imports follow the same direction:
//!
//! ```text
//! io (decode) → frontend (audio, vision) → model (package) → backend (tract) → post (masks, objects) → api
//! ```
//!
//! * [`io`] decodes files: audio to mono PCM, images to RGB8, clip folders to file lists.
//! * [`frontend`] turns PCM into VGGish log-mel patches and frames into normalised NCHW tensors,
//!   exactly as the published models were trained.
//! * [`model`] reads and validates model packages (`avseg.json` + ONNX graphs).
//! * [`backend`] runs a package's graphs; [`backend::tract`] is the CPU backend.
//! * [`post`] turns logits into masks, connected objects and output files.
//! * [`api`] ties the stages together: [`Engine`] for clips, [`api::Session`] for live streams.
//! * [`eval`] scores predictions with the official AVSBench metrics (`avseg eval`).
//! * [`ffi`] is the C ABI over the session (`include/avseg.h`).

pub mod api;
pub mod backend;
pub mod error;
pub mod frontend;
pub mod io;
pub mod model;
pub mod post;
pub mod tensor;

pub use api::{ClipInput, Engine, EngineOptions};
pub use error::Error;
pub use tensor::Tensor;
