//! `avseg info`: a package's manifest, graph signatures and parameter count.

use std::path::PathBuf;

use clap::Args;

use avseg::{FileCheck, ModelPackage, OutputSpec};

use crate::CliError;

#[derive(Args)]
pub(crate) struct InfoArgs {
    /// Model package folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Print the manifest as JSON only.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub package: super::PackageArgs,
}

/// Runs `avseg info`.
pub(crate) fn run(a: InfoArgs) -> Result<(), CliError> {
    let p = ModelPackage::load_with(&a.model, &a.package.options())?;
    let m = p.manifest();
    if a.json {
        println!("{}", serde_json::to_string_pretty(m).expect("manifest serialises"));
        return Ok(());
    }
    println!("package     {}", p.dir().display());
    println!("name        {}", m.name);
    if !m.description.is_empty() {
        println!("description {}", m.description);
    }
    println!("family      {} (T = {} frames per call)", m.family.as_str(), m.frames_per_clip);
    println!(
        "frames      {}x{} RGB, {:?} resize, mean {:?}, std {:?}",
        m.vision.width, m.vision.height, m.vision.resize, m.vision.mean, m.vision.std
    );
    println!(
        "audio       {:?}, 16 kHz, 96x64 patches, padding {:?}, embedding {}",
        m.audio.frontend, m.audio.patch_padding, m.audio.embedding_dim
    );
    match &m.output {
        OutputSpec::Binary { threshold } => println!("output      binary mask, sigmoid > {threshold}"),
        OutputSpec::Semantic { labels, .. } => println!("output      semantic, {} classes ({} ...)", labels.len(), labels.iter().take(4).cloned().collect::<Vec<_>>().join(", ")),
        other => println!("output      {other:?}"),
    }
    for g in p.graphs() {
        let check = match &g.check {
            FileCheck::Verified => "checksum verified",
            FileCheck::NotVerified => "checksum not verified (--no-verify)",
            _ => "no checksum recorded",
        };
        println!(
            "graph       {} = {} (opset {}, {} parameters, {:.1} MB, {check})",
            g.role,
            g.path.display(),
            g.opset,
            g.parameters,
            g.size as f64 / 1e6
        );
        for i in &g.inputs {
            println!("  input     {} {}", i.name, i.shape_string());
        }
        for o in &g.outputs {
            println!("  output    {} {}", o.name, o.shape_string());
        }
    }
    if let (Some(two), OutputSpec::Semantic { labels, .. }) = (p.two_stage(), &m.output) {
        println!(
            "label tree  {} ({} tagger labels in {}; {} parent rule)",
            two.tree_path.display(),
            two.audio_labels.len(),
            two.audio_labels_path.display(),
            match two.tree.parent_rule() {
                avseg::ParentRule::NeedsParent => "needs_parent",
                _ => "independent",
            }
        );
        match two.pixel_rule {
            avseg::PixelRule::ArgMax => println!("pixel rule  arg_max (a pixel is kept when its most probable class is heard)"),
            avseg::PixelRule::HeardMass { silent_ratio } => println!(
                "pixel rule  heard_mass, silent_ratio {silent_ratio} (a pixel is kept when the heard classes together beat the background and {silent_ratio} x the silent classes)"
            ),
        }
        for line in two.tree.describe(labels).lines() {
            println!("  {line}");
        }
    }
    println!("parameters  {}", p.parameters());
    let pv = &m.provenance;
    println!("provenance  {} ({}), trained: {}", pv.source, pv.licence, pv.trained);
    if !pv.created_by.is_empty() {
        println!("created by  {}", pv.created_by);
    }
    if !pv.metrics.is_empty() {
        println!("metrics     {}", serde_json::Value::Object(pv.metrics.clone()));
    }
    if let Some(serde_json::Value::Array(inputs)) = pv.conversion.get("inputs") {
        for i in inputs {
            let field = |k: &str| i.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            println!("converted   from {} ({}), sha256 {}", field("file"), field("role"), field("sha256"));
        }
    }
    Ok(())
}

