//! Frame front end: RGB8 frames of any size → squash-resized → ImageNet-normalised planar f32.
//!
//! Resizing runs on u8 RGB (fast_image_resize has SIMD for `U8x3` on every target, but none for f32
//! on NEON) and normalisation is fused with the HWC → CHW transpose through a 3×256 lookup table, so
//! each output value is computed with exactly the float32 operations of
//! `Normalize(ToTensor(img))`: `(p / 255 - mean) / std`.

use fast_image_resize as fr;
use image::RgbImage;

use super::FrontendError;
use crate::tensor::Tensor;

/// Which bilinear resize imitates the data a model was trained on (docs/spec/vision.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResizeFilter {
    /// `cv2.resize(..., INTER_LINEAR)`: a fixed 2×2 kernel, no antialiasing on downscale. The
    /// official AVSBench-object (S4/MS3) 224×224 frames were made this way.
    BilinearOpencv,
    /// `PIL.Image.resize(..., BILINEAR)`: the triangle kernel widens with the downscale factor
    /// (antialiased). AVSS frames and AVSegFormer's 224→512 upsampling.
    BilinearPil,
}

impl ResizeFilter {
    /// The fast_image_resize algorithm that reproduces the reference library (measured in
    /// `tests/vision_reference.rs`: within 1 level of uint8 on every fixture).
    pub fn algorithm(self) -> fr::ResizeAlg {
        match self {
            ResizeFilter::BilinearOpencv => fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear),
            ResizeFilter::BilinearPil => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
        }
    }
}

/// Target size, resize filter and normalisation of a model's image input.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VisionConfig {
    /// Input width W in pixels.
    pub width: u32,
    /// Input height H in pixels.
    pub height: u32,
    /// The filter used to resize frames to `width`×`height`.
    pub resize: ResizeFilter,
    /// Per-channel mean in RGB order, on the 0..1 scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation in RGB order, on the 0..1 scale.
    pub std: [f32; 3],
}

impl VisionConfig {
    /// ImageNet per-channel mean (RGB, 0..1 scale).
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    /// ImageNet per-channel standard deviation (RGB, 0..1 scale).
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    /// The torchvision ImageNet normalisation every official AVS model uses.
    pub fn imagenet(width: u32, height: u32, resize: ResizeFilter) -> Self {
        Self { width, height, resize, mean: Self::IMAGENET_MEAN, std: Self::IMAGENET_STD }
    }
}

/// Resizes and normalises frames. Holds the resizer, its scratch memory and the resized-frame
/// buffer, so a stream of frames allocates nothing after the first one.
pub struct VisionFrontend {
    cfg: VisionConfig,
    resizer: fr::Resizer,
    options: fr::ResizeOptions,
    /// Resized RGB8 frame at the configured size, tightly packed.
    resized: Vec<u8>,
    /// `lut[c][p]` = `(p / 255 - mean[c]) / std[c]` in f32, the exact value torchvision produces.
    lut: [[f32; 256]; 3],
}

impl std::fmt::Debug for VisionFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionFrontend").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl VisionFrontend {
    /// A front end for `cfg`, with its normalisation table and resize buffer allocated up front.
    pub fn new(cfg: VisionConfig) -> Self {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (p, v) in table.iter_mut().enumerate() {
                *v = (p as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
            }
        }
        Self {
            resizer: fr::Resizer::new(),
            options: fr::ResizeOptions::new().resize_alg(cfg.resize.algorithm()),
            resized: vec![0; 3 * cfg.width as usize * cfg.height as usize],
            lut,
            cfg,
        }
    }

    /// The size, filter and normalisation this front end applies.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Number of f32 values one frame occupies: 3·H·W.
    pub fn frame_len(&self) -> usize {
        3 * self.cfg.width as usize * self.cfg.height as usize
    }

    /// Squash-resizes `img` to the configured size (no aspect preservation, as the official data),
    /// normalises it and writes it as CHW into `out` (`3·H·W` values). A frame already at the target
    /// size is not resampled.
    pub fn preprocess_into(&mut self, img: &RgbImage, out: &mut [f32]) -> Result<(), FrontendError> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        if img.width() == 0 || img.height() == 0 {
            return Err(FrontendError::EmptyImage { width: img.width(), height: img.height() });
        }
        if w == 0 || h == 0 {
            return Err(FrontendError::Resize(format!("configured target size {w}x{h} is empty")));
        }
        if out.len() != self.frame_len() {
            return Err(FrontendError::Resize(format!(
                "output buffer holds {} values; a 3x{h}x{w} frame needs {}",
                out.len(),
                self.frame_len()
            )));
        }
        let pixels: &[u8] = if img.width() == w && img.height() == h {
            img.as_raw()
        } else {
            self.resize_into_buffer(img)?;
            &self.resized
        };
        let plane = w as usize * h as usize;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let [lr, lg, lb] = &self.lut;
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            r[i] = lr[px[0] as usize];
            g[i] = lg[px[1] as usize];
            b[i] = lb[px[2] as usize];
        }
        Ok(())
    }

    /// Pre-processes frames of any (possibly different) sizes into one `[N, 3, H, W]` tensor.
    pub fn batch(&mut self, frames: &[RgbImage]) -> Result<Tensor, FrontendError> {
        let n = self.frame_len();
        if n == 0 && !frames.is_empty() {
            let (w, h) = (self.cfg.width, self.cfg.height);
            return Err(FrontendError::Resize(format!("configured target size {w}x{h} is empty")));
        }
        let mut data = vec![0.0f32; frames.len() * n];
        for (frame, out) in frames.iter().zip(data.chunks_exact_mut(n.max(1))) {
            self.preprocess_into(frame, out)?;
        }
        Ok(Tensor::new(vec![frames.len(), 3, self.cfg.height as usize, self.cfg.width as usize], data))
    }

    /// Resizes only (no normalisation) and returns the RGB8 result at the configured size; used to
    /// compare against reference resizers in uint8 levels.
    pub fn resize_rgb8(&mut self, img: &RgbImage) -> Result<RgbImage, FrontendError> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        if img.width() == 0 || img.height() == 0 {
            return Err(FrontendError::EmptyImage { width: img.width(), height: img.height() });
        }
        if img.width() == w && img.height() == h {
            return Ok(img.clone());
        }
        self.resize_into_buffer(img)?;
        RgbImage::from_raw(w, h, self.resized.clone())
            .ok_or_else(|| FrontendError::Resize("resized buffer has the wrong size".into()))
    }

    /// Resizes `img` into `self.resized`. Typed to RGB8 (`resize_typed::<U8x3>`) rather than the
    /// dynamic `resize`, which would compile fast_image_resize's kernels for all thirteen pixel
    /// types into every binary (about 2 MB of a device library) for the one we use.
    fn resize_into_buffer(&mut self, img: &RgbImage) -> Result<(), FrontendError> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        let src = fr::images::TypedImageRef::<fr::pixels::U8x3>::from_buffer(img.width(), img.height(), img.as_raw())
            .map_err(|e| FrontendError::Resize(e.to_string()))?;
        let mut dst = fr::images::TypedImage::<fr::pixels::U8x3>::from_buffer(w, h, &mut self.resized)
            .map_err(|e| FrontendError::Resize(e.to_string()))?;
        self.resizer.resize_typed(&src, &mut dst, &self.options).map_err(|e| FrontendError::Resize(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(filter: ResizeFilter) -> VisionConfig {
        VisionConfig::imagenet(4, 3, filter)
    }

    #[test]
    fn identity_size_normalises_exactly() {
        let mut fe = VisionFrontend::new(cfg(ResizeFilter::BilinearOpencv));
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([(x * 60) as u8, (y * 100) as u8, 255]));
        let mut out = vec![0.0; fe.frame_len()];
        fe.preprocess_into(&img, &mut out).unwrap();
        let plane = 12;
        for y in 0..3u32 {
            for x in 0..4u32 {
                let i = (y * 4 + x) as usize;
                let p = img.get_pixel(x, y).0;
                for c in 0..3 {
                    let want = (p[c] as f32 / 255.0 - VisionConfig::IMAGENET_MEAN[c]) / VisionConfig::IMAGENET_STD[c];
                    assert_eq!(out[c * plane + i], want);
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant_for_both_filters() {
        for f in [ResizeFilter::BilinearOpencv, ResizeFilter::BilinearPil] {
            let mut fe = VisionFrontend::new(cfg(f));
            let img = RgbImage::from_pixel(37, 11, image::Rgb([10, 128, 250]));
            let t = fe.batch(&[img.clone(), RgbImage::from_pixel(2, 2, image::Rgb([10, 128, 250]))]).unwrap();
            assert_eq!(t.shape(), &[2, 3, 3, 4]);
            let want = (128.0 / 255.0 - 0.456) / 0.224f32;
            assert!(t.item(1)[12..24].iter().all(|&v| (v - want).abs() < 1e-6), "{f:?}");
            assert_eq!(t.item(0), t.item(1));
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut fe = VisionFrontend::new(cfg(ResizeFilter::BilinearPil));
        let mut out = vec![0.0; 5];
        assert!(matches!(
            fe.preprocess_into(&RgbImage::new(0, 5), &mut out),
            Err(FrontendError::EmptyImage { width: 0, height: 5 })
        ));
        assert!(matches!(fe.preprocess_into(&RgbImage::new(4, 3), &mut out), Err(FrontendError::Resize(_))));
        let mut empty = VisionFrontend::new(VisionConfig::imagenet(0, 0, ResizeFilter::BilinearPil));
        assert!(empty.preprocess_into(&RgbImage::new(4, 3), &mut []).is_err());
        assert!(empty.batch(&[RgbImage::new(4, 3)]).is_err());
        assert_eq!(fe.batch(&[]).unwrap().shape(), &[0, 3, 3, 4]);
    }

    #[test]
    fn config_serialises_filter_in_snake_case() {
        let s = serde_json::to_string(&cfg(ResizeFilter::BilinearOpencv)).unwrap();
        assert!(s.contains("\"bilinear_opencv\""), "{s}");
        let back: VisionConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(back, cfg(ResizeFilter::BilinearOpencv));
    }
}
