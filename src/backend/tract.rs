//! CPU backend on tract.
//!
//! Each graph is loaded once, its inputs pinned to the package's fixed shapes (T, H, W), and
//! optimised into a runnable plan; a call then only copies tensors in and out.

use tract::prelude::*;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

use super::{BackendError, BackendOptions, Runner};
use crate::model::{GraphInfo, ModelPackage};
use crate::tensor::Tensor as AvTensor;

const BACKEND: &str = "tract";

/// One optimised graph with fixed input shapes.
struct Graph {
    role: &'static str,
    runnable: Runnable,
    input_names: Vec<String>,
    input_shapes: Vec<Vec<usize>>,
    output_name: String,
}

impl Graph {
    fn prepare(info: &GraphInfo, input_shapes: Vec<Vec<usize>>) -> Result<Self, BackendError> {
        let err = |e: anyhow::Error| BackendError::Prepare {
            backend: BACKEND,
            path: info.path.clone(),
            detail: format!("{e:#}"),
        };
        let mut model = tract::onnx().map_err(err)?.load(&info.path).map_err(err)?;
        // Pin every input to a concrete shape before optimisation: only fixed shapes get tract's
        // best kernels, and the graph's symbolic batch axes are resolved here once.
        for (i, shape) in input_shapes.iter().enumerate() {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            model.set_input_fact(i, format!("{},f32", dims.join(",")).as_str()).map_err(err)?;
        }
        let runnable = model.into_model().map_err(err)?.into_runnable().map_err(err)?;
        Ok(Graph {
            role: info.role,
            runnable,
            input_names: info.inputs.iter().map(|d| d.name.clone()).collect(),
            input_shapes,
            output_name: info.outputs[0].name.clone(),
        })
    }

    fn run(&self, executor: &Executor, inputs: &[&AvTensor]) -> Result<AvTensor, BackendError> {
        let mut values = Vec::with_capacity(inputs.len());
        for ((t, want), name) in inputs.iter().zip(&self.input_shapes).zip(&self.input_names) {
            if t.shape() != want.as_slice() {
                return Err(BackendError::InputShape {
                    graph: self.role,
                    input: name.clone(),
                    expected: want.clone(),
                    actual: t.shape().to_vec(),
                });
            }
            // tract would propagate NaN silently into every mask; refuse it at the boundary.
            if let Some((index, value)) = t.first_non_finite() {
                return Err(BackendError::NonFiniteInput { graph: self.role, input: name.clone(), index, value });
            }
            let v = Tensor::from_slice(t.shape(), t.data())
                .map_err(|e| BackendError::Run { graph: self.role, detail: format!("{e:#}") })?;
            values.push(v);
        }
        // The executor is scoped to this call, so runners with different thread counts can live
        // in one process without fighting over tract's process-wide default.
        let outputs = multithread_tract_scope(executor.clone(), || self.runnable.run(values))
            .map_err(|e| BackendError::Run { graph: self.role, detail: format!("{e:#}") })?;
        let out = outputs.into_iter().next().ok_or_else(|| BackendError::Output {
            graph: self.role,
            output: self.output_name.clone(),
            detail: "is missing".into(),
        })?;
        let (shape, data) = out.as_shape_and_slice::<f32>().map_err(|e| BackendError::Output {
            graph: self.role,
            output: self.output_name.clone(),
            detail: format!("is not f32 ({e:#})"),
        })?;
        Ok(AvTensor::new(shape.to_vec(), data.to_vec()))
    }
}

/// A package's graphs prepared on tract.
pub struct TractRunner {
    audio_encoder: Option<Graph>,
    segmenter: Graph,
    executor: Executor,
}

impl TractRunner {
    pub fn prepare(package: &ModelPackage, options: &BackendOptions) -> Result<Self, BackendError> {
        let executor = match options.threads {
            0 | 1 => Executor::SingleThread,
            n => Executor::multithread(n),
        };
        let t = package.frames_per_clip();
        let audio_encoder = package
            .audio_encoder()
            .map(|info| Graph::prepare(info, vec![vec![t, 1, crate::frontend::audio::PATCH_FRAMES, crate::frontend::audio::MEL_BANDS]]))
            .transpose()?;
        let segmenter = Graph::prepare(package.segmenter(), vec![package.frames_shape(), package.segmenter_audio_shape()])?;
        Ok(TractRunner { audio_encoder, segmenter, executor })
    }
}

impl Runner for TractRunner {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn encode_audio(&mut self, logmel: &AvTensor) -> Result<AvTensor, BackendError> {
        match &self.audio_encoder {
            Some(g) => g.run(&self.executor, &[logmel]),
            None => Ok(logmel.clone()),
        }
    }

    fn segment(&mut self, frames: &AvTensor, audio: &AvTensor) -> Result<AvTensor, BackendError> {
        let out = self.segmenter.run(&self.executor, &[frames, audio])?;
        if let Some((index, value)) = out.first_non_finite() {
            return Err(BackendError::Output {
                graph: "segmenter",
                output: self.segmenter.output_name.clone(),
                detail: format!("has a non-finite value ({value}) at index {index}"),
            });
        }
        Ok(out)
    }
}
