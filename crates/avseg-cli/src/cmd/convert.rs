//! `avseg convert`: an official checkpoint to a model package, through the Python export tools.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::{python as pytools, CliError};

/// The families `avseg convert` knows (tools/avseg_export/convert.py::FAMILIES).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FamilyArg {
    /// TPAVI with ResNet-50, S4/MS3 (binary). Needs --vggish.
    TpaviR50,
    /// TPAVI with PVT-v2-b5, S4/MS3 (binary). Needs --vggish.
    TpaviPvt,
    /// TPAVI with ResNet-50, AVSS (71 classes). Needs --vggish.
    TpaviR50Avss,
    /// TPAVI with PVT-v2-b5, AVSS (71 classes). Needs --vggish.
    TpaviPvtAvss,
    /// AVSegFormer with ResNet-50, S4/MS3 (VGGish inside the checkpoint).
    AvsegformerR50,
    /// AVSegFormer with PVT-v2-b5, S4/MS3.
    AvsegformerPvt,
    /// AVSegFormer with ResNet-50, AVSS.
    AvsegformerR50Avss,
    /// AVSegFormer with PVT-v2-b5, AVSS.
    AvsegformerPvtAvss,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// Weights as in the checkpoint.
    F32,
    /// Weights stored as float16 (about half the package size); the graphs still compute in f32.
    F16,
}

#[derive(Args)]
pub(crate) struct ConvertArgs {
    #[arg(long, value_enum)]
    pub family: FamilyArg,
    /// The model's checkpoint: torch.save .pth/.pt (zip or legacy format, read without torch) or
    /// .safetensors with the same keys; a `module.` prefix is removed.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// TPAVI families: the separate VGGish weights, vggish-10086976.pth.
    #[arg(long)]
    pub vggish: Option<PathBuf>,
    /// Package folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Input size, a multiple of 32 from 64 to 1024 (default: what the family was trained at,
    /// AVSegFormer S4/MS3 512, everything else 224).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u32>,
    /// PVT-v2 families: attention head width (official b5: 64). A checkpoint cannot carry it, so
    /// width-reduced models must give theirs.
    #[arg(long)]
    pub pvt_head_dim: Option<u32>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Package name in the manifest (default: the family).
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite a non-empty --out folder.
    #[arg(long)]
    pub force: bool,
}

fn parse_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n % 32 == 0 && (64..=1024).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a supported input size (a multiple of 32 from 64 to 1024; official: 224 or 512)")),
    }
}

/// `avseg convert`: checks the arguments, then hands over to tools/avseg_export/convert.py, whose
/// progress and summary go straight to stdout.
pub(crate) fn run(a: ConvertArgs) -> Result<(), CliError> {
    for (flag, p) in [("--checkpoint", Some(&a.checkpoint)), ("--vggish", a.vggish.as_ref())] {
        if let Some(p) = p {
            if !p.is_file() {
                return Err(CliError::Usage(format!("{}: no such file ({flag})", p.display())));
            }
        }
    }
    let family = a.family.to_possible_value().expect("no skipped variants").get_name().to_string();
    let precision = a.precision.to_possible_value().expect("no skipped variants").get_name().to_string();
    let python = pytools::python()?;
    let tools = pytools::tools_dir()?;
    let mut cmd = pytools::command(&python, &tools);
    cmd.args(["-m", "avseg_export.convert", "--family", &family, "--precision", &precision])
        .arg("--checkpoint")
        .arg(&a.checkpoint)
        .arg("--out")
        .arg(&a.out);
    if let Some(v) = &a.vggish {
        cmd.arg("--vggish").arg(v);
    }
    if let Some(d) = a.pvt_head_dim {
        cmd.args(["--pvt-head-dim", &d.to_string()]);
    }
    if let Some(s) = a.size {
        cmd.args(["--size", &s.to_string()]);
    }
    if let Some(n) = &a.name {
        cmd.args(["--name", n]);
    }
    if a.force {
        cmd.arg("--force");
    }
    let out = cmd
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| CliError::Tool(format!("{}: cannot start Python: {e}", python.display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(pytools::failure("convert", &python, &stderr));
    }
    // Warnings from a successful run still matter (e.g. numpy about a strange value).
    eprint!("{stderr}");
    Ok(())
}

