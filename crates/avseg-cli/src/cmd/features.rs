//! `avseg features`: the exact model inputs (log-mel patches, normalised frames) as .npy files.

use std::path::PathBuf;

use clap::Args;

use avseg::{
    audio_seconds_for_patches, decode_audio_with, find_frames, frame_tensor, write_npy, AudioFrontend, Error, Frame, ModelPackage, PatchPadding,
    ResizeFilter, VisionConfig, VisionFrontend,
};

use crate::CliError;

#[derive(Args)]
pub(crate) struct FeaturesArgs {
    /// Audio file: writes log-mel patches [N, 1, 96, 64] to --out.
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Output .npy for the log-mel patches.
    #[arg(long, requires = "audio")]
    pub out: Option<PathBuf>,
    /// Folder of numbered frames: writes normalised frames [n, 3, H, W] to --frames-out.
    #[arg(long, requires = "frames_out")]
    pub frames: Option<PathBuf>,
    /// Output .npy for the frames.
    #[arg(long, requires = "frames")]
    pub frames_out: Option<PathBuf>,
    /// Take T, padding and input size from this package (default: AVSBench S4, T=5, 224x224,
    /// repeat-last padding, OpenCV-style bilinear resize).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write every patch of the audio, unpadded, instead of exactly T.
    #[arg(long)]
    pub all_patches: bool,
    #[command(flatten)]
    pub package: super::PackageArgs,
    #[command(flatten)]
    pub inputs: super::InputArgs,
}

/// Runs `avseg features`.
pub(crate) fn run(a: FeaturesArgs) -> Result<(), CliError> {
    if a.audio.is_none() && a.frames.is_none() {
        return Err(CliError::Usage("give --audio FILE --out FILE.npy and/or --frames DIR --frames-out FILE.npy".into()));
    }
    let limits = a.inputs.limits()?;
    // Without a package: AVSBench S4 as TPAVI was trained (T = 5, 224x224, OpenCV-style resize).
    let (t, padding, vision) = match &a.model {
        Some(dir) => {
            let p = ModelPackage::load_with(dir, &a.package.options())?;
            let m = p.manifest();
            (m.frames_per_clip, m.audio.patch_padding, m.vision.clone())
        }
        None => (5, PatchPadding::RepeatLast, VisionConfig::imagenet(224, 224, ResizeFilter::BilinearOpencv)),
    };
    if let (Some(audio_path), Some(out)) = (&a.audio, &a.out) {
        // T patches need only the audio they span; --all-patches needs the whole file.
        let needed = (!a.all_patches).then(|| audio_seconds_for_patches(t));
        let pcm = decode_audio_with(audio_path, &limits, needed)?;
        let mut fe = AudioFrontend::new();
        let patches = if a.all_patches { fe.all_patches(&pcm, padding) } else { fe.clip_patches(&pcm, t, padding) }
            .map_err(|e| Error::frontend(audio_path, e))?;
        write_npy(out, patches.shape(), patches.data())?;
        eprintln!("log-mel {:?} -> {}", patches.shape(), out.display());
    }
    if let (Some(dir), Some(out)) = (&a.frames, &a.frames_out) {
        let files = find_frames(dir)?;
        limits.check_clip_frames(dir, files.len()).map_err(CliError::Usage)?;
        let frames = files.iter().map(|p| Frame::load_with(p, &limits)).collect::<Result<Vec<_>, _>>()?;
        let tensor = frame_tensor(&mut VisionFrontend::new(vision), &frames)?;
        write_npy(out, tensor.shape(), tensor.data())?;
        eprintln!("frames {:?} -> {}", tensor.shape(), out.display());
    }
    Ok(())
}
