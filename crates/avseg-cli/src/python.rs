//! Finding the Python export tools, which only `convert` and `bench --vs-onnxruntime` use: the
//! runtime itself never needs Python.

use std::path::{Path, PathBuf};

use crate::CliError;


const SETUP: &str =
    "python3 -m venv .venv && .venv/bin/pip install -r tools/requirements.txt && .venv/bin/pip install --no-deps -e tools";

/// Folders that may hold the repository: the working directory, the source tree this binary
/// was built from, and the ancestors of the binary (target/{debug,release}/avseg).
fn roots() -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd);
    }
    out.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")));
    if let Ok(exe) = std::env::current_exe() {
        out.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// `$AVSEG_PYTHON`, else `.venv/bin/python` in one of the `roots()`.
pub(crate) fn python() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("AVSEG_PYTHON") {
        let p = PathBuf::from(p);
        // A bare name (`python3`) is looked up on PATH by the OS; a path must exist.
        if p.components().count() > 1 && !p.is_file() {
            return Err(CliError::Tool(format!("AVSEG_PYTHON={}: no such file", p.display())));
        }
        return Ok(p);
    }
    let venv = if cfg!(windows) { ".venv/Scripts/python.exe" } else { ".venv/bin/python" };
    roots().into_iter().map(|r| r.join(venv)).find(|p| p.is_file()).ok_or_else(|| {
        CliError::Tool(format!(
            "no Python for the export tools: set AVSEG_PYTHON to a python with tools/requirements.txt \
             installed, or create the repository's venv: {SETUP}"
        ))
    })
}

/// The repository's `tools/` folder (holding `avseg_export/`), or `$AVSEG_TOOLS`.
pub(crate) fn tools_dir() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("AVSEG_TOOLS") {
        return Ok(PathBuf::from(p));
    }
    roots().into_iter().map(|r| r.join("tools")).find(|t| t.join("avseg_export/convert.py").is_file()).ok_or_else(
        || {
            CliError::Tool(
                "tools/avseg_export not found: run avseg from the repository, or set AVSEG_TOOLS to its tools/ folder"
                    .into(),
            )
        },
    )
}

/// `python` with `tools/` on PYTHONPATH, so `-m avseg_export.…` resolves.
pub(crate) fn command(python: &Path, tools: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(python);
    let mut paths = vec![tools.to_path_buf()];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    cmd.env("PYTHONPATH", std::env::join_paths(paths).unwrap_or_else(|_| tools.as_os_str().to_owned()));
    cmd
}

/// One-line error from a failed tool run: its `error: …` line, or the last line of a traceback.
pub(crate) fn failure(what: &str, python: &Path, stderr: &str) -> CliError {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(e) = lines.iter().rev().find_map(|l| l.strip_prefix("error: ")) {
        return CliError::Tool(e.to_string());
    }
    let last = lines.last().copied().unwrap_or("no output");
    if last.contains("No module named") {
        return CliError::Tool(format!(
            "{what}: {} lacks the export tools ({last}); install them: {} -m pip install -r tools/requirements.txt",
            python.display(),
            python.display()
        ));
    }
    CliError::Tool(format!("{what} failed ({}): {last}", python.display()))
}
