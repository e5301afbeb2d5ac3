//! Frame front end. (Placeholder types; the implementation lands on the vision branch.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    BilinearOpencv,
    BilinearPil,
}
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VisionConfig {
    pub width: u32,
    pub height: u32,
    pub resize: ResizeFilter,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}
