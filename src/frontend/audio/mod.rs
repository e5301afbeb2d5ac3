//! Audio front end. (Placeholder types; the implementation lands on the audio branch.)
pub const TARGET_RATE: u32 = 16_000;
pub const PATCH_FRAMES: usize = 96;
pub const MEL_BANDS: usize = 64;
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchPadding {
    RepeatLast,
    Zeros,
}
