//! `avseg verify`: checks a package's graph files against the sizes and checksums its manifest
//! records, then loads it as `segment` would (ONNX structure, signatures against the manifest).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use avseg::{FileCheck, ModelPackage, PackageOptions};

use crate::CliError;

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Model package folder.
    #[arg(long)]
    pub model: PathBuf,
}

/// Runs `avseg verify`: one line per graph file, then the package check. Exit status 1 when a file
/// is damaged or the package does not load.
pub(crate) fn run(a: VerifyArgs) -> Result<(), CliError> {
    let t0 = Instant::now();
    let checks = ModelPackage::verify_files(&a.model)?;
    let hashed = t0.elapsed();
    let mut damaged = 0;
    for (role, path, check) in &checks {
        let size = std::fs::metadata(path).map(|m| format!("{:.1} MB", m.len() as f64 / 1e6)).unwrap_or_default();
        match check {
            FileCheck::Verified => println!("ok          {role:<14} {} ({size}, size and checksum match)", path.display()),
            FileCheck::NotRecorded | FileCheck::NotVerified => println!(
                "unchecked   {role:<14} {} ({size}): avseg.json records no checksum; re-export the package to add one",
                path.display()
            ),
            FileCheck::Mismatch(detail) => {
                damaged += 1;
                println!("DAMAGED     {role:<14} {}: {detail}", path.display());
            }
            other => println!("{other:?}     {role:<14} {}", path.display()),
        }
    }
    if damaged > 0 {
        return Err(CliError::Usage(format!(
            "{}: {damaged} of {} graph files damaged; restore them from the original package",
            a.model.display(),
            checks.len()
        )));
    }
    // Structure: what loading checks beyond the bytes (checksums again are cheap next to this).
    let mut options = PackageOptions::default();
    options.verify_checksums = false;
    ModelPackage::load_with(&a.model, &options)?;
    println!("package     {} loads ({:.0} ms hashing)", a.model.display(), hashed.as_secs_f64() * 1e3);
    Ok(())
}
