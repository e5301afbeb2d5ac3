//! `avseg eval`: scores a model or saved logits on AVSBench with the official metrics.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use avseg_eval::{report, Dataset, EvalError, EvalOptions, Source, Split, Subset};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SubsetArg {
    S4,
    Ms3,
    Avss,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SplitArg {
    Train,
    Val,
    Test,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// Model package to run on every video.
    #[arg(long, conflicts_with = "logits", required_unless_present = "logits")]
    pub model: Option<PathBuf>,
    /// Score saved logits instead: one {video}.npy per video, f32 [T, K, H, W] (K = 1 for
    /// S4/MS3, 71 for AVSS), as written by --save-logits.
    #[arg(long)]
    pub logits: Option<PathBuf>,
    /// AVSBench folder: the one holding the subset's CSV (Single-source/, Multi-sources/, AVSS/)
    /// or its parent.
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long, value_enum)]
    pub subset: SubsetArg,
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// Videos per batch for the official (batch-dependent) F: frames per batch = videos x T.
    /// 4 matches TPAVI's test script (20 frames), 2 AVSegFormer's (10 frames).
    #[arg(long, default_value_t = 4)]
    pub batch_videos: usize,
    /// Output folder for eval.json, per_video.csv and worst_frames.png.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// With --model: also save each video's logits as OUT/logits/{video}.npy (the --logits layout).
    #[arg(long, requires = "model")]
    pub save_logits: bool,
    /// Evaluate only the first N videos of the split (CSV order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Threads for matrix products.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Runs `avseg eval`.
pub(crate) fn run(a: EvalArgs) -> Result<(), EvalError> {
    let subset = match a.subset {
        SubsetArg::S4 => Subset::S4,
        SubsetArg::Ms3 => Subset::Ms3,
        SubsetArg::Avss => Subset::Avss,
    };
    let split = match a.split {
        SplitArg::Train => Split::Train,
        SplitArg::Val => Split::Val,
        SplitArg::Test => Split::Test,
    };
    let source = match (a.model, a.logits) {
        (Some(m), _) => Source::Model(m),
        (None, Some(l)) => Source::Logits(l),
        (None, None) => return Err(EvalError::Input("give --model DIR or --logits DIR".into())),
    };
    let dataset = Dataset::open(&a.dataset, subset, split)?;
    let opts = EvalOptions {
        batch_videos: a.batch_videos,
        limit: a.limit,
        save_logits: a.save_logits.then(|| a.out.join("logits")),
        threads: a.threads,
        progress: true,
    };
    let outcome = avseg_eval::evaluate(dataset, source, &opts)?;
    let written = report::write_all(&outcome, &a.out)?;
    print!("{}", report::table(&outcome));
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

