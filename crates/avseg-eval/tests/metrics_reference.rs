//! Metric parity with the official AVSBench code: every value of `reference/metrics.safetensors`
//! and `metrics.json` (reference README §9), to 1e-6 (AVSS per-class sums 1e-5, counts exact).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;

use avseg_eval::metrics::{
    f_curve, f_thresholds, fscore_frame, frame_batches, mask_iou, score_batches, AvssAccumulator, FrameScore,
    FscoreDataset, PR_NUM,
};
use common::{load_reference, RefTensor};

const TOL: f64 = 1e-6;
const SUM_TOL: f64 = 1e-5;

fn load() -> Option<(HashMap<String, RefTensor>, serde_json::Value)> {
    let dir = common::reference_dir("metrics")?;
    let t = load_reference(&dir.join("metrics.safetensors"));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    Some((t, j))
}

fn max_diff(name: &str, got: &[f64], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let d = common::max_abs_diff_f64(got, want);
    eprintln!("{name:<28} n={:<4} max|diff| = {d:.3e}", got.len());
    assert!(d <= tol, "{name}: max |diff| {d:e} > {tol:e}\n got {got:?}\nwant {want:?}");
    d
}

fn json_vec(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn s4_frames(t: &HashMap<String, RefTensor>) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    let logits = &t["input.logits"];
    let gt = &t["input.gt"];
    assert_eq!(logits.shape, vec![20, 112, 112]);
    let hw = 112 * 112;
    let l: Vec<Vec<f32>> = logits.f32().chunks(hw).map(|c| c.to_vec()).collect();
    let g: Vec<Vec<u8>> = gt.data.chunks(hw).map(|c| c.iter().map(|&v| (v > 0.5) as u8).collect()).collect();
    (l, g)
}

#[test]
fn thresholds_are_bit_exact() {
    let Some((t, j)) = load() else { return };
    let ours = f_thresholds();
    let want = t["expected.f_thresholds"].f32();
    assert_eq!(want.len(), PR_NUM);
    for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "threshold {i}: {a:e} vs {b:e}");
    }
    let from_json: Vec<f32> = json_vec(&j["f_thresholds"]).iter().map(|&v| v as f32).collect();
    assert_eq!(&ours[..], &from_json[..]);
}

#[test]
fn s4_per_frame() {
    let Some((t, j)) = load() else { return };
    let (l, g) = s4_frames(&t);
    let th = f_thresholds();
    let iou: Vec<f64> = l.iter().zip(&g).map(|(l, g)| mask_iou(l, g)).collect();
    let curves: Vec<_> = l.iter().zip(&g).map(|(l, g)| f_curve(l, g, &th)).collect();
    let f: Vec<f64> = curves.iter().map(|c| fscore_frame(c.as_ref())).collect();
    max_diff("iou_per_frame", &iou, &t["expected.iou_per_frame"].data, TOL);
    max_diff("iou_per_frame (json)", &iou, &json_vec(&j["s4"]["iou_per_frame"]), TOL);
    max_diff("f_per_frame", &f, &t["expected.f_per_frame"].data, TOL);
    max_diff("f_per_frame (json)", &f, &json_vec(&j["s4"]["f_per_frame"]), TOL);
    let flat: Vec<f64> =
        curves.iter().flat_map(|c| c.map(|c| c.to_vec()).unwrap_or(vec![0.0; PR_NUM])).map(|v| v as f64).collect();
    max_diff("f_curve_per_frame", &flat, &t["expected.f_curve_per_frame"].data, TOL);
    // The four empty-GT frames are skipped by F.
    let empty: Vec<usize> = curves.iter().enumerate().filter(|(_, c)| c.is_none()).map(|(i, _)| i).collect();
    assert_eq!(empty, vec![3, 10, 11, 17]);
    // Frame 14: logits exactly 0 on the object.
    assert_eq!(iou[14], 0.0);
    assert!((f[14] - 1.0).abs() < TOL);
}

#[test]
fn s4_batches() {
    let Some((t, j)) = load() else { return };
    let (l, g) = s4_frames(&t);
    let th = f_thresholds();
    let frames: Vec<FrameScore> = l.iter().zip(&g).map(|(l, g)| FrameScore::new(l, g, &th)).collect();
    for b in [4usize, 2, 10, 20] {
        let s = score_batches(&frames, &frame_batches(frames.len(), b));
        max_diff(&format!("iou_batch{b}"), &s.iou_per_batch, &t[&format!("expected.iou_batch{b}")].data, TOL);
        max_diff(&format!("f_batch{b}"), &s.f_per_batch, &t[&format!("expected.f_batch{b}")].data, TOL);
        max_diff(&format!("miou_batch{b}"), &[s.miou], &t[&format!("expected.miou_batch{b}")].data, TOL);
        max_diff(&format!("f_mean_batch{b}"), &[s.fscore], &t[&format!("expected.f_mean_batch{b}")].data, TOL);
        let jb = &j["s4"][format!("batch{b}")];
        max_diff(&format!("batch{b} json iou"), &s.iou_per_batch, &json_vec(&jb["iou_per_batch"]), TOL);
        max_diff(&format!("batch{b} json f"), &s.f_per_batch, &json_vec(&jb["f_per_batch"]), TOL);
        max_diff(&format!("batch{b} json miou"), &[s.miou], &[jb["miou"].as_f64().unwrap()], TOL);
        max_diff(&format!("batch{b} json f_mean"), &[s.fscore], &[jb["f_mean"].as_f64().unwrap()], TOL);
    }
    // The README's headline values, as a readable cross-check.
    let s2 = score_batches(&frames, &frame_batches(20, 2));
    assert_eq!(s2.f_per_batch[5], 0.0, "frames 10-11 both have empty GT");
    assert!((s2.fscore - 0.623748).abs() < 1e-6);
    // The batch-independent variant: one curve mean over all 16 non-empty frames = batch 20.
    let mut d = FscoreDataset::new();
    frames.iter().for_each(|f| d.add(f.curve.as_deref()));
    assert_eq!(d.frames(), 16);
    max_diff("fscore_dataset vs batch20", &[d.value()], &t["expected.f_mean_batch20"].data, TOL);
}

#[test]
fn avss_accumulators() {
    let Some((t, j)) = load() else { return };
    let logits = &t["input.avss_logits"];
    let labels = &t["input.avss_labels"];
    assert_eq!(logits.shape, vec![10, 71, 28, 28]);
    let (k, hw) = (71, 28 * 28);
    let lf = logits.f32();
    let mut acc = AvssAccumulator::new(k);
    for f in 0..10 {
        let y: Vec<u8> = labels.data[f * hw..(f + 1) * hw].iter().map(|&v| v as u8).collect();
        acc.add_logits(&lf[f * k * hw..(f + 1) * k * hw], &y);
    }
    max_diff("avss_iou_sum", &acc.iou_sum, &t["expected.avss_iou_sum"].data, SUM_TOL);
    max_diff("avss_f_sum", &acc.f_sum, &t["expected.avss_f_sum"].data, SUM_TOL);
    let want_count: Vec<u64> = t["expected.avss_cls_count"].data.iter().map(|&v| v as u64).collect();
    assert_eq!(acc.count, want_count, "avss_cls_count");
    max_diff("avss_frame_miou", &acc.frame_miou, &t["expected.avss_frame_miou"].data, TOL);
    let s = acc.scores();
    for (name, got) in [
        ("avss_miou", s.miou),
        ("avss_fscore", s.fscore),
        ("avss_miou_present", s.miou_present),
        ("avss_fscore_present", s.fscore_present),
        ("avss_miou_noBg", s.miou_nobg_official),
        ("avss_fscore_noBg", s.fscore_nobg_official),
    ] {
        max_diff(name, &[got], &t[&format!("expected.{name}")].data, TOL);
    }
    let a = &j["avss"];
    for (key, got) in [
        ("miou", s.miou),
        ("fscore", s.fscore),
        ("miou_present", s.miou_present),
        ("fscore_present", s.fscore_present),
        ("miou_noBg", s.miou_nobg_official),
        ("fscore_noBg", s.fscore_nobg_official),
    ] {
        max_diff(&format!("avss json {key}"), &[got], &[a[key].as_f64().unwrap()], TOL);
    }
    let present: Vec<f64> = (0..k).filter(|&c| acc.count[c] > 0).map(|c| c as f64).collect();
    assert_eq!(present, json_vec(&a["classes_present"]), "classes_present");
    assert_eq!(s.classes_present, present.len());
    max_diff("avss json iou_sum", &acc.iou_sum, &json_vec(&a["iou_sum"]), SUM_TOL);
    max_diff("avss json f_sum", &acc.f_sum, &json_vec(&a["f_sum"]), SUM_TOL);
    max_diff("avss json frame_miou", &acc.frame_miou, &json_vec(&a["frame_miou"]), TOL);
}
