//! The runner on the emulated device against tract, on the bundled packages: the same decluttered
//! graph, planned and run through `kernels/*.cu` compiled for the host, and run by tract.

use tract_onnx::prelude::*;

use super::emulated::EmulatedDevice;
use super::launch::Device;
use super::plan::{plan, Precision};
use super::runner::Program;
use crate::backend::cpu::CpuKernels;
use crate::backend::cuda::reference::Lcg;

/// Largest |a − b| over the largest |b| (relative to the tensor's range), and the share of
/// positions where the two agree on the sign (the binary mask).
fn compare(ours: &[f32], tract: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), tract.len());
    let scale = tract.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = 0f32;
    let mut agree = 0usize;
    for (a, b) in ours.iter().zip(tract) {
        let d = (a - b).abs();
        worst = if d.is_nan() { f32::INFINITY } else { worst.max(d) };
        agree += ((*a > 0.0) == (*b > 0.0)) as usize;
    }
    (worst / scale, agree as f32 / ours.len() as f32)
}

/// Runs one graph of `package` through tract once and through the device `open` makes at each of
/// `precisions`, on seeded inputs; returns per precision, per output, (relative diff, agreement).
fn device_vs_tract<D: Device>(package: &str, graph: &str, shapes: &[Vec<usize>], precisions: &[Precision], open: impl Fn(Precision) -> D) -> Vec<Vec<(f32, f32)>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(package).join(graph);
    let model = crate::backend::tract::decluttered_model(&path, shapes, CpuKernels::Avseg).unwrap();
    let mut rng = Lcg::new(17);
    let inputs: Vec<Vec<f32>> = shapes.iter().map(|s| rng.normals(s.iter().product(), 1.0)).collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let tvs: TVec<TValue> = inputs.iter().zip(shapes).map(|(v, s)| Tensor::from_shape(s, v).unwrap().into_tvalue()).collect();
    let expected = model.clone().into_runnable().unwrap().run(tvs.clone()).unwrap();
    let mut all = Vec::new();
    for &precision in precisions {
        let p = plan(&model, precision).unwrap();
        let mut device = open(precision);
        let mut program = Program::new(&path.display().to_string(), &model, &p, &mut device).unwrap();
        let mut outputs = vec![Vec::new(); program.outputs.len()];
        program.run(&mut device, &refs, &mut outputs).unwrap();
        let results: Vec<(f32, f32)> = outputs
            .iter()
            .zip(expected.iter())
            .map(|(ours, theirs)| compare(ours, theirs.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap()))
            .collect();
        let tol = if precision == Precision::F16 { 1e-2 } else { 1e-4 };
        if results.iter().any(|(d, _)| !(*d <= tol)) {
            eprintln!("{package}/{graph} {precision:?}: {}", first_divergence(&model, &mut program, &mut device, &refs, tvs.clone()));
        }
        all.push(results);
    }
    all
}

/// Runs the program launch by launch and names the first plan step whose output differs from
/// tract's value of the same node by more than 1e-4 of its range: where a failure starts.
fn first_divergence(model: &TypedModel, program: &mut Program, device: &mut dyn Device, inputs: &[&[f32]], tvs: TVec<TValue>) -> String {
    let by_name: std::collections::HashMap<&str, usize> = model.nodes().iter().map(|n| (n.name.as_str(), n.id)).collect();
    let steps: Vec<(String, u64, usize, usize)> =
        program.trace.iter().filter_map(|(n, at, end)| at.map(|o| (n.clone(), o, *end, by_name[n.as_str()]))).collect();
    let outlets: Vec<OutletId> = steps.iter().map(|s| OutletId::new(s.3, 0)).collect();
    let mut all = model.clone();
    all.select_output_outlets(&outlets).unwrap();
    let values = all.into_runnable().unwrap().run(tvs).unwrap();
    program.upload_inputs(device, inputs).unwrap();
    let launches = program.launches.clone();
    let mut done = 0;
    for ((name, at, end, _), value) in steps.iter().zip(values.iter()) {
        for l in &launches[done..*end] {
            device.launch(l).unwrap();
        }
        done = *end;
        let want = value.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        let half = program.precision == Precision::F16;
        let mut bytes = vec![0u8; want.len() * if half { 2 } else { 4 }];
        device.download(program.arena_base() + at, &mut bytes).unwrap();
        let got: Vec<f32> = if half {
            bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32()).collect()
        } else {
            bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let (d, _) = compare(&got, &want);
        if !(d <= if half { 1e-2 } else { 1e-4 }) {
            let op = model.node(by_name[name.as_str()]).op().name();
            return format!("first divergence at node {name} ({op}), launches {done}: {d:.2e} of its range");
        }
    }
    "no step diverges".into()
}

/// One package's graphs in fp32 (within 1e-4 of tract's range, masks agreeing on 99.9 % of
/// positions) and fp16 storage (within 1e-2, the same agreement), on the emulated device.
fn check_package(package: &str) {
    check_package_on(package, |p| EmulatedDevice::new(p).unwrap())
}

/// [`check_package`] on the device `open` makes.
fn check_package_on<D: Device>(package: &str, open: impl Fn(Precision) -> D + Copy) {
    let pkg = crate::model::ModelPackage::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(package)).unwrap();
    let t = pkg.frames_per_clip();
    let graphs = [("audio_encoder.onnx", vec![vec![t, 1, 96, 64]], false), ("segmenter.onnx", pkg.segmenter_inputs(t), true)];
    for (graph, shapes, masks) in graphs {
        let runs = device_vs_tract(package, graph, &shapes, &[Precision::F32, Precision::F16], open);
        for (precision, results) in [Precision::F32, Precision::F16].into_iter().zip(runs) {
            let tol = if precision == Precision::F16 { 1e-2 } else { 1e-4 };
            for (diff, agree) in results {
                eprintln!("{package}/{graph} {precision:?}: max |diff| / max |tract| = {diff:.2e}, sign agreement {:.4}%", 100.0 * agree);
                assert!(diff <= tol, "{package}/{graph} {precision:?}: diff {diff}");
                assert!(!masks || agree >= 0.999, "{package}/{graph} {precision:?}: agreement {agree}");
            }
        }
    }
}

#[test]
fn tiny_tpavi_matches_tract() {
    check_package("models/tiny-tpavi");
}

#[test]
fn default_model_matches_tract() {
    check_package("models/default");
}

/// A one-node graph: activations `x` of `x_shape` and a seeded constant of `w_shape`, in the
/// einsum's input order `x_first` (else the constant comes first), combined by `expr`.
fn einsum_graph(expr: &str, x_shape: &[usize], w_shape: &[usize], x_first: bool) -> TypedModel {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(x_shape)).unwrap();
    let w = Tensor::from_shape(w_shape, &Lcg::new(5).normals(w_shape.iter().product(), 1.0)).unwrap();
    let w = model.add_const("w", w).unwrap();
    let inputs = if x_first { [x, w] } else { [w, x] };
    let y = model.wire_node("fc", EinSum::new(expr.parse().unwrap(), f32::datum_type()), &inputs).unwrap();
    model.select_output_outlets(&y).unwrap();
    model
}

/// VGGish's first fully connected layer at ten frames, as tract keeps it (`mkba,nbak->mn`: the
/// summed axes in the order k, b, a in the activations and b, a, k in the weights), runs as one
/// product with the weights stored permuted, at both precisions, with the constant on either
/// side; activations whose summed axes no single stride walks stay unplanned.
#[test]
fn an_einsum_over_several_summed_axes_runs_with_its_constant_permuted() {
    use crate::backend::cpu::rewrite::{einsum_as_matmul, einsum_as_matmul_permuting_constant};
    let cases: [(&str, &[usize], &[usize], bool); 3] = [
        ("mkba,nbak->mn", &[10, 12, 4, 6], &[32, 4, 6, 12], true),
        ("nbak,mkba->mn", &[10, 12, 4, 6], &[32, 4, 6, 12], false),
        // Two summed axes and a batch axis shared by both sides.
        ("gmkb,gnbk->gmn", &[3, 7, 5, 4], &[3, 9, 4, 5], true),
    ];
    for (expr, xs, ws, x_first) in cases {
        let model = einsum_graph(expr, xs, ws, x_first);
        let node = model.node(model.output_outlets().unwrap()[0].node);
        assert!(einsum_as_matmul(&model, node).unwrap().is_none(), "{expr}");
        let (mm, perm) = einsum_as_matmul_permuting_constant(&model, node).unwrap().unwrap_or_else(|| panic!("{expr}: not a product"));
        assert_eq!(perm.operand, if x_first { 1 } else { 0 }, "{expr}");
        let k_total: usize = if expr.starts_with('g') { 4 * 5 } else { 12 * 4 * 6 };
        assert_eq!(mm.k, k_total, "{expr}: one summed axis of their combined length");
        let x = Lcg::new(9).normals(xs.iter().product(), 1.0);
        let expected = model.clone().into_runnable().unwrap().run(tvec!(Tensor::from_shape(xs, &x).unwrap().into_tvalue())).unwrap();
        let expected = expected[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        for precision in [Precision::F32, Precision::F16] {
            let p = plan(&model, precision).unwrap();
            assert!(p.unsupported.is_empty(), "{expr}: {:?}", p.unsupported);
            let mut device = EmulatedDevice::new(precision).unwrap();
            let mut program = Program::new(expr, &model, &p, &mut device).unwrap();
            let mut out = vec![Vec::new()];
            program.run(&mut device, &[&x], &mut out).unwrap();
            let (diff, _) = compare(&out[0], &expected);
            let tol = if precision == Precision::F16 { 1e-2 } else { 1e-5 };
            eprintln!("{expr} {precision:?}: max |diff| / max |tract| = {diff:.2e}");
            assert!(diff <= tol, "{expr} {precision:?}: {diff}");
        }
    }
    // `kmb,nbk->mn`: the activations' summed axes k and b sit on either side of m, so no one
    // stride walks them; the einsum stays off the device rather than run wrong.
    let model = einsum_graph("kmb,nbk->mn", &[4, 3, 5], &[6, 5, 4], true);
    let node = model.node(model.output_outlets().unwrap()[0].node);
    assert!(einsum_as_matmul_permuting_constant(&model, node).unwrap().is_none());
    assert_eq!(plan(&model, Precision::F32).unwrap().unsupported.len(), 1);
}

/// The tiny package's audio encoder at ten frames (an AVSS clip's length), where tract keeps the
/// flatten inside the first fully connected layer's einsum, against tract.
#[test]
fn tiny_audio_encoder_at_ten_frames_matches_tract() {
    use crate::backend::cpu::rewrite::einsum_as_matmul_permuting_constant;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi/audio_encoder.onnx");
    let model = crate::backend::tract::decluttered_model(&path, &[vec![10, 1, 96, 64]], CpuKernels::Avseg).unwrap();
    let permuted: Vec<String> =
        model.nodes().iter().filter(|n| einsum_as_matmul_permuting_constant(&model, n).unwrap().is_some()).map(|n| n.name.clone()).collect();
    assert_eq!(permuted.len(), 1, "the first fully connected layer only: {permuted:?}");
    let runs = device_vs_tract("models/tiny-tpavi", "audio_encoder.onnx", &[vec![10, 1, 96, 64]], &[Precision::F32, Precision::F16], |p| EmulatedDevice::new(p).unwrap());
    for (precision, results) in [Precision::F32, Precision::F16].into_iter().zip(runs) {
        let tol = if precision == Precision::F16 { 1e-2 } else { 1e-4 };
        for (diff, _) in results {
            eprintln!("tiny-tpavi/audio_encoder.onnx T=10 {precision:?}: max |diff| / max |tract| = {diff:.2e}");
            assert!(diff <= tol, "{precision:?}: {diff}");
        }
    }
}

/// The same checks on a real GPU, when there is one (the on-device checklist in docs/cuda.md):
/// the runner's launches through cudarc, against tract.
#[cfg(feature = "cuda")]
#[test]
fn the_runner_on_a_gpu_matches_tract() {
    use super::gpu_device::GpuDevice;
    match GpuDevice::open(0, Precision::F32) {
        Ok(d) => eprintln!("the_runner_on_a_gpu_matches_tract: {}", d.describe()),
        Err(e) => {
            eprintln!("skipped: no CUDA device: the_runner_on_a_gpu_matches_tract ({e})");
            return;
        }
    }
    for package in ["models/tiny-tpavi", "models/default"] {
        check_package_on(package, |p| GpuDevice::open(0, p).unwrap());
    }
}

/// A program readies every launch on its device at load (a GPU compiles and resolves each kernel
/// then), and a device that cannot fails the load, not a later call.
#[test]
fn a_program_prepares_its_launches_at_load() {
    use super::launch::Launch;
    use super::CudaError;
    struct Preparing {
        inner: EmulatedDevice,
        prepared: usize,
        fail: bool,
    }
    impl Device for Preparing {
        fn name(&self) -> &'static str {
            "preparing"
        }
        fn precision(&self) -> Precision {
            self.inner.precision()
        }
        fn alloc(&mut self, bytes: usize) -> Result<u64, CudaError> {
            self.inner.alloc(bytes)
        }
        fn free(&mut self, addr: u64) -> Result<(), CudaError> {
            self.inner.free(addr)
        }
        fn memory(&self) -> super::launch::DeviceMemory {
            self.inner.memory()
        }
        fn upload(&mut self, dst: u64, src: &[u8]) -> Result<(), CudaError> {
            self.inner.upload(dst, src)
        }
        fn download(&mut self, src: u64, dst: &mut [u8]) -> Result<(), CudaError> {
            self.inner.download(src, dst)
        }
        fn launch(&mut self, launch: &Launch) -> Result<(), CudaError> {
            self.inner.launch(launch)
        }
        fn prepare(&mut self, launches: &[Launch]) -> Result<(), CudaError> {
            self.prepared += launches.len();
            if self.fail {
                return Err(CudaError::NoEmulator("a kernel failed to load"));
            }
            Ok(())
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-tpavi/audio_encoder.onnx");
    let model = crate::backend::tract::decluttered_model(&path, &[vec![5, 1, 96, 64]], CpuKernels::Avseg).unwrap();
    let p = plan(&model, Precision::F32).unwrap();
    let mut device = Preparing { inner: EmulatedDevice::new(Precision::F32).unwrap(), prepared: 0, fail: false };
    let program = Program::new("audio", &model, &p, &mut device).unwrap();
    assert!(!program.launches.is_empty());
    assert_eq!(device.prepared, program.launches.len());
    device.fail = true;
    let e = Program::new("audio", &model, &p, &mut device).err().expect("a failed prepare fails the load");
    assert!(e.to_string().contains("a kernel failed to load"), "{e}");
}

/// The device refuses an address outside its allocations instead of writing through it.
#[test]
fn the_emulated_device_refuses_stray_addresses() {
    let mut d = EmulatedDevice::new(Precision::F32).unwrap();
    let base = d.alloc(1024).unwrap();
    assert_eq!(base % super::plan::ALIGN, 0);
    d.upload(base, &[1u8; 1024]).unwrap();
    assert!(d.upload(base + 1000, &[0u8; 100]).is_err());
    let mut back = [0u8; 16];
    assert!(d.download(base - 16, &mut back).is_err());
}

/// A launch past CUDA's limits is an error, as the driver's would be.
#[test]
fn the_emulated_device_enforces_launch_limits() {
    use super::launch::{Dim3, Launch, Shape, UnaryKind};
    let mut d = EmulatedDevice::new(Precision::F32).unwrap();
    let buf = d.alloc(4096).unwrap();
    let ok = Launch::Unary { shape: Shape::linear(1024).unwrap(), x: buf, out: buf, kind: UnaryKind::Relu, n: 1024 };
    d.launch(&ok).unwrap();
    let too_wide = Launch::Unary { shape: Shape { grid: Dim3 { x: 1, y: 1, z: 1 }, block: Dim3 { x: 2048, y: 1, z: 1 } }, x: buf, out: buf, kind: UnaryKind::Relu, n: 1024 };
    let e = d.launch(&too_wide).unwrap_err().to_string();
    assert!(e.contains("launch limits") && e.contains("unary_f32"), "{e}");
}
