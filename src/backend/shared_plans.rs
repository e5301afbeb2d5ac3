//! Optimised tract plans shared by the engines of one process.
//!
//! Two sessions of one package (a robot with two cameras, a server with a session per client, the
//! C ABI fuzzer creating one per input) would otherwise optimise every graph again and hold its
//! weights twice: TPAVI-R50's are 0.5 GB. A prepared plan is immutable while it runs (avseg's
//! operators keep their scratch per thread, tract's in the run state), so engines that prepare the
//! same graph file with the same input shapes, threads and kernels share one `Arc` of it, and each
//! keeps its own run state.
//!
//! Only weak references are kept here: a plan lives exactly as long as some engine uses it, so the
//! memory held stays what the live engines need. A file is the same file while its canonical path,
//! size and modification time are; a plan whose file's checksum was checked is only shared with
//! engines that ask for the check, and the other way round.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use tract_onnx::prelude::TypedSimplePlan;

use super::cpu::tpavi::WindowBlock;
use super::cpu::CpuKernels;

/// What makes two preparations of a graph interchangeable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlanKey {
    path: PathBuf,
    len: u64,
    modified: SystemTime,
    input_shapes: Vec<Vec<usize>>,
    threads: usize,
    kernels: CpuKernels,
    /// Whether the graph's checksum was checked when the plan was prepared.
    checked: bool,
    /// Prepared as a sliding TPAVI window's step of this many frames (other inputs and outputs).
    window: Option<usize>,
}

impl PlanKey {
    /// The key of `path` prepared with these settings; `None` (never shared) when the file's
    /// identity cannot be read, for instance on a file system without modification times.
    pub(crate) fn new(
        path: &Path,
        input_shapes: &[Vec<usize>],
        threads: usize,
        kernels: CpuKernels,
        checked: bool,
        window: Option<usize>,
    ) -> Option<Self> {
        let path = path.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        Some(PlanKey {
            path,
            len: meta.len(),
            modified: meta.modified().ok()?,
            input_shapes: input_shapes.to_vec(),
            threads,
            kernels,
            checked,
            window,
        })
    }
}

/// A plan, and the TPAVI blocks of a sliding window's step (empty for any other graph).
type Entry = (PlanKey, Weak<TypedSimplePlan>, Vec<WindowBlock>);

static PLANS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn plans() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    // The list holds no invariant a panic could break halfway; a poisoned lock is still usable.
    PLANS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The plan a live engine prepared under `key`, if any.
pub(crate) fn find(key: &PlanKey) -> Option<(Arc<TypedSimplePlan>, Vec<WindowBlock>)> {
    plans().iter().find(|(k, _, _)| k == key).and_then(|(_, plan, blocks)| Some((plan.upgrade()?, blocks.clone())))
}

/// Offers a freshly prepared plan to later engines, and forgets the plans no engine holds anymore.
pub(crate) fn share(key: PlanKey, plan: &Arc<TypedSimplePlan>, blocks: &[WindowBlock]) {
    let mut plans = plans();
    plans.retain(|(k, p, _)| p.strong_count() > 0 && *k != key);
    plans.push((key, Arc::downgrade(plan), blocks.to_vec()));
}

/// How many shared plans are alive (tests and logs).
pub(crate) fn live() -> usize {
    plans().iter().filter(|(_, p, _)| p.strong_count() > 0).count()
}
