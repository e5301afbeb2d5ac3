//! Pre- and post-processing on the device, so that frames go up and masks come down as bytes:
//!
//! * [`FrameStage`]: an RGB8 frame at its own size → the package's resize (`bilinear_opencv` in
//!   one launch, `bilinear_pil` in two, `kernels/preprocess.cu`) and normalisation, written
//!   straight into the segmenter's input buffer;
//! * [`MaskStage`]: one frame's logits, still on the device → its mask at the frame's size
//!   (`kernels/postprocess.cu`, the math of `src/post/mask.rs`), labels and confidences downloaded.
//!
//! Frames of any size arrive, so these buffers cannot all be sized at load: each grows to the
//! largest frame seen (the old one freed) and is reused after that, so a stream of same-sized frames
//! allocates once. The PIL tap tables are recomputed only when the frame size changes.

use super::launch::{Device, Launch, Normalise, Shape};
use super::plan::ALIGN;
use super::resample::PilTables;
use super::CudaError;
use crate::backend::{MaskRule, RawFrame};
use crate::frontend::vision::{ResizeFilter, VisionConfig};

/// A device buffer that grows to the largest size asked of it.
#[derive(Debug, Default)]
struct Grown {
    addr: u64,
    bytes: usize,
}

impl Grown {
    /// The buffer's address, at least `bytes` long.
    fn at_least(&mut self, device: &mut dyn Device, bytes: usize) -> Result<u64, CudaError> {
        if bytes > self.bytes || self.addr == 0 {
            if self.addr != 0 {
                device.free(self.addr)?;
                self.addr = 0;
            }
            // Whole alignment units, so the next slightly larger frame often fits.
            let bytes = bytes.max(1).div_ceil(ALIGN as usize) * ALIGN as usize;
            self.addr = device.alloc(bytes)?;
            self.bytes = bytes;
        }
        Ok(self.addr)
    }
}

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Shape { kernel: "frames", detail: format!("{what} {v} is over the kernels' i32 range") })
}

fn aligned(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN as usize) * ALIGN as usize
}

/// Frame pre-processing on the device; see the module documentation.
#[derive(Debug)]
pub struct FrameStage {
    width: usize,
    height: usize,
    resize: ResizeFilter,
    norm: Normalise,
    frame: Grown,
    /// The PIL resize's horizontal pass output, `rows × width × 3` bytes.
    rows_out: Grown,
    tables: Grown,
    host_tables: PilTables,
    /// The frame size `tables` holds the taps of.
    tables_for: Option<(usize, usize)>,
    staging: Vec<u8>,
}

impl FrameStage {
    /// The stage for a package's frame input.
    pub fn new(vision: &VisionConfig) -> Self {
        FrameStage {
            width: vision.width as usize,
            height: vision.height as usize,
            resize: vision.resize,
            norm: Normalise { mean: vision.mean, std: vision.std },
            frame: Grown::default(),
            rows_out: Grown::default(),
            tables: Grown::default(),
            host_tables: PilTables::default(),
            tables_for: None,
            staging: Vec::new(),
        }
    }

    /// Values one pre-processed frame occupies: `3·H·W`.
    pub fn frame_len(&self) -> usize {
        3 * self.width * self.height
    }

    /// Uploads `frame` and writes it resized and normalised, `[3, H, W]` at the device's
    /// precision, at the device address `dst`.
    pub fn frame_into(&mut self, device: &mut dyn Device, frame: &RawFrame<'_>, dst: u64) -> Result<(), CudaError> {
        let (sw, sh) = (frame.width as usize, frame.height as usize);
        let (dw, dh) = (self.width, self.height);
        if sw == 0 || sh == 0 {
            return Err(CudaError::Shape { kernel: "frames", detail: format!("the frame is {sw}x{sh}, empty") });
        }
        if frame.pixels.len() != 3 * sw * sh {
            return Err(CudaError::Shape { kernel: "frames", detail: format!("{} bytes for a {sw}x{sh} RGB frame, which holds {}", frame.pixels.len(), 3 * sw * sh) });
        }
        let src = self.frame.at_least(device, frame.pixels.len())?;
        device.upload(src, frame.pixels)?;
        let stride = int(3 * sw, "frame row")?;
        match self.resize {
            ResizeFilter::BilinearOpencv => {
                let (sw, sh, dw, dh) = (int(sw, "width")?, int(sh, "height")?, int(dw, "width")?, int(dh, "height")?);
                device.launch(&Launch::PreprocessBilinear { shape: Shape::planar(self.width, self.height)?, src, sw, sh, stride, dst, dw, dh, norm: self.norm })
            }
            ResizeFilter::BilinearPil => {
                let t = &mut self.host_tables;
                if self.tables_for != Some((sw, sh)) {
                    t.compute_into((sw, sh), (dw, dh));
                    // Four i32 tables, each starting on an alignment boundary.
                    self.staging.clear();
                    for table in [&t.columns.bounds, &t.columns.coeffs, &t.rows.bounds, &t.rows.coeffs] {
                        table.iter().for_each(|v| self.staging.extend_from_slice(&v.to_ne_bytes()));
                        self.staging.resize(aligned(self.staging.len()), 0);
                    }
                    let at = self.tables.at_least(device, self.staging.len())?;
                    device.upload(at, &self.staging)?;
                    self.tables_for = Some((sw, sh));
                }
                let base = self.tables.addr;
                let col_bounds = base;
                let col_coeffs = col_bounds + aligned(4 * t.columns.bounds.len()) as u64;
                let row_bounds = col_coeffs + aligned(4 * t.columns.coeffs.len()) as u64;
                let row_coeffs = row_bounds + aligned(4 * t.rows.bounds.len()) as u64;
                let tmp = self.rows_out.at_least(device, t.row_count * dw * 3)?;
                device.launch(&Launch::ResampleRows {
                    shape: Shape::planar(dw, t.row_count)?,
                    src,
                    stride,
                    row0: int(t.row0, "first row")?,
                    rows: int(t.row_count, "rows")?,
                    bounds: col_bounds,
                    coeffs: col_coeffs,
                    taps: int(t.columns.taps, "taps")?,
                    tmp,
                    dw: int(dw, "width")?,
                })?;
                device.launch(&Launch::ResampleColumns {
                    shape: Shape::planar(dw, dh)?,
                    tmp,
                    dw: int(dw, "width")?,
                    bounds: row_bounds,
                    coeffs: row_coeffs,
                    taps: int(t.rows.taps, "taps")?,
                    dst,
                    dh: int(dh, "height")?,
                    norm: self.norm,
                })
            }
        }
    }
}

/// Mask post-processing on the device; see the module documentation.
#[derive(Debug, Default)]
pub struct MaskStage {
    labels: Grown,
    confidence: Grown,
    /// Model-resolution labels and confidences of a class map, before upsampling.
    small_labels: Grown,
    small_confidence: Grown,
    staging: Vec<u8>,
}

impl MaskStage {
    /// One frame's logits `[k, h, w]` at the device address `logits` → its mask at `fw`×`fh` by
    /// `rule`, downloaded into `labels` and `confidence` (`fw·fh` values each).
    #[allow(clippy::too_many_arguments)]
    pub fn mask_into(
        &mut self, device: &mut dyn Device, logits: u64, (k, h, w): (usize, usize, usize), (fw, fh): (usize, usize), rule: MaskRule, labels: &mut [u8],
        confidence: &mut [f32],
    ) -> Result<(), CudaError> {
        let n = fw * fh;
        if labels.len() != n || confidence.len() != n {
            return Err(CudaError::Shape { kernel: "masks", detail: format!("{} labels and {} confidences for a {fw}x{fh} mask", labels.len(), confidence.len()) });
        }
        if n == 0 {
            return Ok(());
        }
        let out_labels = self.labels.at_least(device, n)?;
        let out_confidence = self.confidence.at_least(device, 4 * n)?;
        let (hi, wi, ow, oh) = (int(h, "height")?, int(w, "width")?, int(fw, "mask width")?, int(fh, "mask height")?);
        match rule {
            MaskRule::Binary { threshold } => {
                if k != 1 {
                    return Err(CudaError::Shape { kernel: "mask_binary", detail: format!("{k} logit maps; a binary mask takes one") });
                }
                device.launch(&Launch::MaskBinary { shape: Shape::planar(fw, fh)?, logits, h: hi, w: wi, labels: out_labels, confidence: out_confidence, ow, oh, threshold })?;
            }
            MaskRule::Classes => {
                if !(1..=256).contains(&k) {
                    return Err(CudaError::Shape { kernel: "argmax_classes", detail: format!("{k} classes; labels are u8, so 1 to 256") });
                }
                let plane = h * w;
                let small_labels = self.small_labels.at_least(device, plane)?;
                let small_confidence = self.small_confidence.at_least(device, 4 * plane)?;
                device.launch(&Launch::ArgmaxClasses {
                    shape: Shape::linear(plane as u64)?,
                    logits,
                    k: int(k, "classes")?,
                    plane: int(plane, "plane")?,
                    labels: small_labels,
                    confidence: small_confidence,
                })?;
                device.launch(&Launch::NearestLabels {
                    shape: Shape::planar(fw, fh)?,
                    labels: small_labels,
                    confidence: small_confidence,
                    h: hi,
                    w: wi,
                    out_labels,
                    out_confidence,
                    ow,
                    oh,
                })?;
            }
        }
        device.download(out_labels, labels)?;
        self.staging.resize(4 * n, 0);
        device.download(out_confidence, &mut self.staging)?;
        for (c, b) in confidence.iter_mut().zip(self.staging.chunks_exact(4)) {
            *c = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}
