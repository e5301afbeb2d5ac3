//! Streaming sessions against batch mode, frame sampling, back-pressure and bad input.

mod common;

use std::path::PathBuf;

use avseg::{ClipInput, Engine, EngineOptions, Session, SessionOptions};
use avseg::Error;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    repo().join("models/tiny-tpavi")
}

/// The sample WAV as interleaved f32 (int16 / 32768, as symphonia scales it), its rate and channels.
fn sample_wav() -> (Vec<f32>, u32, usize) {
    let mut r = hound::WavReader::open(repo().join("models/sample/audio.wav")).unwrap();
    let spec = r.spec();
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    assert_eq!(spec.bits_per_sample, 16);
    let s: Vec<f32> = r.samples::<i16>().map(|v| v.unwrap() as f32 / 32768.0).collect();
    (s, spec.sample_rate, spec.channels as usize)
}

fn sample_clip() -> ClipInput {
    let files = avseg::find_clip(&repo().join("models/sample")).unwrap();
    ClipInput::load(&files).unwrap()
}

fn push_audio_chunks(s: &mut Session, pcm: &[f32], rate: u32, ch: usize, chunk_frames: usize, origin: f64) {
    let mut pos = 0usize;
    for chunk in pcm.chunks(chunk_frames * ch) {
        s.push_audio(chunk, rate, ch, origin + pos as f64 / rate as f64).unwrap();
        pos += chunk.len() / ch;
    }
}

/// Streams 16 kHz mono in 10 ms chunks, `frames[i]` pushed when the audio clock reaches its
/// instant (i + 0.9375 s), with `process()` after each chunk; `on_call(session, results made, audio
/// clock)` runs after each chunk that ran the model (at most one call per chunk). Stops once every
/// frame has had its call.
fn stream_mono_16k(s: &mut Session, mono: &[f32], frames: &[&image::RgbImage], mut on_call: impl FnMut(&Session, usize, f64)) {
    let n = frames.len();
    let (mut next_frame, mut pos) = (0usize, 0usize);
    for chunk in mono.chunks(160) {
        s.push_audio(chunk, 16_000, 1, pos as f64 / 16e3).unwrap();
        pos += chunk.len();
        let now = pos as f64 / 16e3;
        while next_frame < n && next_frame as f64 + 0.9375 <= now {
            let img = frames[next_frame];
            s.push_frame(img.as_raw(), img.width(), img.height(), next_frame as f64 + 0.9375).unwrap();
            next_frame += 1;
        }
        let calls = s.stats().windows;
        let made = s.process().unwrap();
        assert!(s.stats().windows - calls <= 1, "10 ms of audio completes at most one frame's patch");
        if s.stats().windows > calls {
            on_call(s, made, now);
        }
        if next_frame == n && s.stats().windows == n as u64 {
            return;
        }
    }
    panic!("the audio ended before every frame had its call: {:?}", s.stats());
}

#[test]
fn streaming_equals_batch() {
    let clip = sample_clip();
    let mut engine = Engine::load(model(), &EngineOptions::default()).unwrap();
    let batch = engine.run_clip(&clip).unwrap();

    let (pcm, rate, ch) = sample_wav();
    assert_eq!((rate, ch), (44_100, 2));
    let mut s = Session::new(model(), &SessionOptions::default()).unwrap();
    let origin = 100.0; // an arbitrary capture clock: only differences matter
    // Audio and frames interleaved as a live source would deliver them: each frame once the audio
    // up to its time has arrived.
    let mut next_frame = 0usize;
    let mut pos = 0usize;
    for chunk in pcm.chunks(317 * ch) {
        s.push_audio(chunk, rate, ch, origin + pos as f64 / rate as f64).unwrap();
        pos += chunk.len() / ch;
        let now = pos as f64 / rate as f64;
        while next_frame < clip.frames.len() && next_frame as f64 + 0.9375 <= now {
            let img = &clip.frames[next_frame].image;
            s.push_frame(img.as_raw(), img.width(), img.height(), origin + next_frame as f64 + 0.9375).unwrap();
            next_frame += 1;
        }
        s.process().unwrap();
    }
    // The clip's last frame (4.9375 s) lies inside its 5 s of audio, so all five were pushed.
    assert_eq!(next_frame, 5);
    s.finish().unwrap();

    let mut results = Vec::new();
    while let Some(r) = s.pop_result() {
        results.push(r);
    }
    assert_eq!(results.len(), batch.frames.len());
    let stats = s.stats();
    assert_eq!((stats.frames_pushed, stats.frames_used, stats.frames_skipped, stats.frames_dropped), (5, 5, 0, 0));
    assert_eq!(stats.windows, 1);
    assert_eq!(stats.audio_samples, pcm.len() as u64 / 2);

    let (first, logits) = s.last_window_logits().unwrap();
    assert_eq!(first, 0);
    assert_eq!(logits.shape(), batch.logits.shape());
    let max_diff = common::max_abs_diff(logits.data(), batch.logits.data());
    eprintln!("stream vs batch: max |logit diff| = {max_diff:e}");
    // The streamed resampler emits the same samples as the whole-clip one (same blocks, same zero
    // tail), and log-mel and graphs are the same code, so the logits must agree to the bit.
    assert_eq!(max_diff, 0.0, "streamed logits differ from batch by {max_diff}");

    for (r, b) in results.iter().zip(&batch.frames) {
        assert_eq!(r.sequence, b.index as u64);
        assert!((r.frame_timestamp - (origin + b.timestamp)).abs() < 1e-9);
        assert_eq!((r.mask.width, r.mask.height), (b.mask.width, b.mask.height));
        let same = r.mask.labels.iter().zip(&b.mask.labels).filter(|(x, y)| x == y).count();
        let agree = same as f64 / b.mask.labels.len() as f64;
        eprintln!("frame {}: pixel agreement {:.6}, {} object(s)", b.index, agree, r.objects.len());
        assert!(agree >= 0.999, "frame {}: agreement {agree}", b.index);
        assert_eq!(r.objects, b.objects);
    }
}

/// Per-frame streaming (the default model: TPAVI with an attention group of 1). Each sampled frame
/// k is segmented alone with the 0.975 s patch starting at its own second, [k, k + 0.975) s from the
/// stream origin, so a result comes one patch after the frame instead of after its window. The
/// reference is the package's T-frame graph (the plan batch mode uses) on the same frames, row i
/// given the patch at i s; every streamed logit must agree with its row to 1e-5 of the largest.
/// 16 kHz mono input, so that no resampler stands between the stream's patches and the reference's.
#[test]
fn per_frame_stream_equals_the_window_graph_with_the_same_patches() {
    let default_model = repo().join("models/default");
    let clip = sample_clip();
    // The sample's first channel, taken as a 16 kHz signal: 13.8 s, enough for 5 patches.
    let (pcm, _, ch) = sample_wav();
    let mono: Vec<f32> = pcm.iter().step_by(ch).copied().collect();

    let mut s = Session::new(&default_model, &SessionOptions::default()).unwrap();
    assert!(s.per_frame(), "the default model's frames are independent");
    assert_eq!(s.window_frames(), 1);
    let t = 5usize;
    let mut streamed: Vec<Option<Vec<f32>>> = vec![None; t];
    let mut lags = Vec::new();
    let pictures: Vec<&image::RgbImage> = clip.frames[..t].iter().map(|f| &f.image).collect();
    stream_mono_16k(&mut s, &mono, &pictures, |s, made, now| {
        assert_eq!(made, 1, "one result per call");
        let (k, logits) = s.last_window_logits().unwrap();
        assert_eq!(logits.shape()[0], 1, "one frame per call");
        let r = s.latest().unwrap();
        assert_eq!(r.sequence, k);
        assert!((r.patch_end - (k as f64 + 0.975)).abs() < 1e-9, "patch_end {}", r.patch_end);
        // Ready in the push that completed the patch: within one 10 ms chunk of its end.
        lags.push(now - r.patch_end);
        streamed[k as usize] = Some(logits.data().to_vec());
    });
    assert!(lags.iter().all(|&l| (0.0..0.0101).contains(&l)), "stream lag per result: {lags:?}");

    let mut engine = Engine::load(&default_model, &EngineOptions::default()).unwrap();
    let frames = engine.frame_features(&clip.frames[..t]).unwrap();
    let mut patches = Vec::new();
    for i in 0..t {
        let own_second = avseg::Pcm { samples: mono[16_000 * i..].to_vec(), rate: 16_000 };
        let p = engine.audio_features(&own_second, std::path::Path::new("own second"), 1).unwrap();
        patches.extend_from_slice(p.item(0));
    }
    let patches = avseg::Tensor::new(vec![t, 1, 96, 64], patches);
    let reference = engine.run_graphs(&frames, &patches).unwrap();
    let largest = reference.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, row) in streamed.iter().enumerate() {
        let row = row.as_ref().unwrap_or_else(|| panic!("no streamed result for frame {i}"));
        let diff = common::max_abs_diff(row, reference.item(i));
        eprintln!("frame {i}: streamed alone vs its row of the window graph: max |diff| {diff:e} (largest logit {largest})");
        assert!(diff <= 1e-5 * largest, "frame {i}: {diff} > 1e-5 x {largest}");
    }
}

/// Sliding windows for official TPAVI (the tiny package: attention over groups of 5 frames). Ten
/// instants, each a different picture (the sample's five, then the same with red and blue swapped),
/// streamed from 16 kHz mono in 10 ms chunks. Each result must equal row 4 of the 5-frame graph run
/// on the window ending at it with the same own-second patches, to 1e-5 of the largest logit:
/// without padding from instant 4 on (none before), with padding from instant 0, the window filled
/// with its first frame and that frame's patch.
#[test]
fn sliding_windows_equal_the_five_frame_graph_on_the_same_window() {
    use avseg::StreamMode;
    let clip = sample_clip();
    let (pcm, _, ch) = sample_wav();
    let mono: Vec<f32> = pcm.iter().step_by(ch).copied().collect();
    let n = 10usize;
    let frames: Vec<avseg::Frame> = (0..n)
        .map(|i| {
            let mut f = clip.frames[i % 5].clone();
            if i >= 5 {
                f.image.pixels_mut().for_each(|p| p.0.swap(0, 2));
            }
            f
        })
        .collect();

    let mut reference_engine = Engine::load(model(), &EngineOptions::default()).unwrap();
    let patch_of = |engine: &mut Engine, i: usize| -> Vec<f32> {
        let own_second = avseg::Pcm { samples: mono[16_000 * i..].to_vec(), rate: 16_000 };
        engine.audio_features(&own_second, std::path::Path::new("own second"), 1).unwrap().item(0).to_vec()
    };
    let own_patches: Vec<Vec<f32>> = (0..n).map(|i| patch_of(&mut reference_engine, i)).collect();

    for mode in [StreamMode::Sliding, StreamMode::SlidingPadded] {
        let padded = mode == StreamMode::SlidingPadded;
        let mut s = Session::new(model(), &SessionOptions { mode, ..SessionOptions::default() }).unwrap();
        assert_eq!((s.mode(), s.window_frames(), s.per_frame()), (mode, 1, true));
        let mut streamed: Vec<Option<Vec<f32>>> = vec![None; n];
        let pictures: Vec<&image::RgbImage> = frames.iter().map(|f| &f.image).collect();
        stream_mono_16k(&mut s, &mono, &pictures, |s, made, _| {
            let (k, logits) = s.last_window_logits().unwrap();
            assert_eq!(logits.shape()[0], 1, "one frame per call");
            assert_eq!(made, usize::from(padded || k >= 4), "{mode:?}: results at instant {k}");
            if made == 1 {
                let r = s.latest().unwrap();
                assert_eq!(r.sequence, k);
                assert!((r.patch_end - (k as f64 + 0.975)).abs() < 1e-9, "patch_end {}", r.patch_end);
                streamed[k as usize] = Some(logits.data().to_vec());
            }
        });
        assert_eq!(s.stats().windows, n as u64);

        for k in 0..n {
            let Some(row) = &streamed[k] else {
                assert!(!padded && k < 4, "{mode:?}: no result for instant {k}");
                continue;
            };
            // The window ending at k; padding repeats the run's first frame (instant 0).
            let window: Vec<usize> = (0..5).map(|i| (k + i).saturating_sub(4)).collect();
            let picked: Vec<avseg::Frame> = window.iter().map(|&i| frames[i].clone()).collect();
            let frames_in = reference_engine.frame_features(&picked).unwrap();
            let patches_in = avseg::Tensor::new(vec![5, 1, 96, 64], window.iter().flat_map(|&i| own_patches[i].clone()).collect());
            let reference = reference_engine.run_graphs(&frames_in, &patches_in).unwrap();
            let largest = reference.item(4).iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = common::max_abs_diff(row, reference.item(4));
            eprintln!("{mode:?} instant {k}: window {window:?}: max |diff| {diff:e} (largest logit {largest})");
            assert!(diff <= 1e-5 * largest, "{mode:?} instant {k}: {diff} > 1e-5 x {largest}");
        }
    }
}

/// A 10 fps camera: only the frame at each sampling instant is used, and the masks equal those of
/// pushing just those frames.
#[test]
fn ten_fps_uses_sampling_instants_only() {
    let clip = sample_clip();
    let (pcm, rate, ch) = sample_wav();
    let mut s = Session::new(model(), &SessionOptions::default()).unwrap();
    push_audio_chunks(&mut s, &pcm, rate, ch, 4410, 0.0);
    // Frames at 0.0375 + i/10 s: instant k (k + 0.9375 s) gets exactly frame i = 10k + 9.
    let mut pushed = 0;
    for i in 0..50 {
        let ts = 0.0375 + i as f64 / 10.0;
        let src = &clip.frames[(i / 10).min(4)].image;
        // Frames that should not be used are black: a wrong choice changes the mask.
        let black = vec![0u8; src.as_raw().len()];
        let data = if i % 10 == 9 { src.as_raw().as_slice() } else { black.as_slice() };
        s.push_frame(data, src.width(), src.height(), ts).unwrap();
        pushed += 1;
    }
    s.process().unwrap();
    s.finish().unwrap();
    let st = s.stats();
    eprintln!("10 fps: {st:?}");
    assert_eq!(st.frames_pushed, pushed);
    assert_eq!(st.frames_used, 5);
    assert_eq!(st.frames_skipped, 45);
    assert_eq!(st.results, 5);
    let mut engine = Engine::load(model(), &EngineOptions::default()).unwrap();
    let batch = engine.run_clip(&clip).unwrap();
    let mut n = 0;
    while let Some(r) = s.pop_result() {
        assert_eq!(r.mask.labels, batch.frames[r.sequence as usize].mask.labels, "frame {}", r.sequence);
        assert!((r.frame_timestamp - (0.0375 + (10 * r.sequence + 9) as f64 / 10.0)).abs() < 1e-9);
        n += 1;
    }
    assert_eq!(n, 5);
}

/// No processing while 40 s of frames arrive: the queue keeps at most `frame_queue` frames, the
/// rest are dropped and counted, and the newest windows still run.
#[test]
fn back_pressure_drops_oldest() {
    let clip = sample_clip();
    let img = &clip.frames[0].image;
    let opts = SessionOptions { frame_queue: 5, ..Default::default() };
    let mut s = Session::new(model(), &opts).unwrap();
    let rate = 16_000u32;
    let second = vec![0.01f32; rate as usize];
    let seconds = 40;
    for sec in 0..seconds {
        s.push_audio(&second, rate, 1, sec as f64).unwrap();
        // 2 fps
        for j in 0..2 {
            let ts = sec as f64 + j as f64 * 0.5 + 0.4375;
            s.push_frame(img.as_raw(), img.width(), img.height(), ts).unwrap();
        }
    }
    let st = s.stats();
    eprintln!("before process: {st:?}");
    assert_eq!(st.windows, 0);
    // Instant k (k + 0.9375 s) takes the frame pushed exactly then; the k + 0.4375 frames are
    // skipped. Only the newest window (instants 35..40) fits in a queue of 5.
    assert_eq!((st.frames_used, st.frames_skipped), (40, 40));
    assert_eq!(st.frames_dropped, 35, "{st:?}");
    let produced = s.process().unwrap();
    let st = s.stats();
    eprintln!("after process: {st:?}");
    assert_eq!(produced, 5);
    assert_eq!(st.frames_dropped + st.results, 40, "{st:?}");
    assert_eq!(s.latest().unwrap().sequence, 39);
    assert_eq!(st.frames_used + st.frames_skipped, st.frames_pushed, "{st:?}");
}

/// Audio with no frames for a long time must not grow the ring without bound.
#[test]
fn audio_without_frames_is_bounded() {
    let mut s = Session::new(model(), &SessionOptions::default()).unwrap();
    let chunk = vec![0.0f32; 4800 * 2];
    for i in 0..600 {
        // 60 s of 48 kHz stereo
        s.push_audio(&chunk, 48_000, 2, i as f64 * 0.1).unwrap();
    }
    assert_eq!(s.process().unwrap(), 0);
    assert_eq!(s.stats().frames_dropped, 0);
}

#[test]
fn hop_one_emits_one_result_per_second() {
    let clip = sample_clip();
    let img = &clip.frames[0].image;
    let opts = SessionOptions { hop: 1, ..Default::default() };
    let mut s = Session::new(model(), &opts).unwrap();
    for sec in 0..8 {
        s.push_audio(&vec![0.02f32; 16_000], 16_000, 1, sec as f64).unwrap();
        s.push_frame(img.as_raw(), img.width(), img.height(), sec as f64 + 0.9375).unwrap();
        s.process().unwrap();
    }
    let st = s.stats();
    // Window w needs frames up to w + 4.9375 s and audio up to w + 4.815 s: windows 0..=3 are
    // complete after 8 s; the first emits 5 results, each later one its newest frame.
    assert_eq!(st.windows, 4, "{st:?}");
    assert_eq!(st.results, 5 + 3);
    assert_eq!(s.latest().unwrap().sequence, 7);
}

fn err_text(r: Result<(), Error>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(()) => panic!("expected an error"),
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let mut s = Session::new(model(), &SessionOptions::default()).unwrap();
    let e = err_text(s.push_audio(&[0.0, f32::NAN, 0.0, 0.0], 44_100, 2, 0.0));
    assert!(e.contains("non-finite") && e.contains("index 1"), "{e}");
    assert!(s.push_audio(&[], 44_100, 2, 0.0).is_ok());
    s.push_audio(&[0.0; 882], 44_100, 2, 0.0).unwrap();
    let e = err_text(s.push_audio(&[0.0; 441], 44_100, 1, 0.01));
    assert!(e.contains("2 channel") && e.contains("1 channel"), "{e}");
    let e = err_text(s.push_audio(&[0.0; 882], 48_000, 2, 0.01));
    assert!(e.contains("44100 Hz") && e.contains("48000 Hz"), "{e}");
    let e = err_text(s.push_audio(&[0.0; 881], 44_100, 2, 0.01));
    assert!(e.contains("whole number"), "{e}");
    let e = err_text(s.push_audio(&[0.0; 882], 44_100, 2, -1.0));
    assert!(e.contains("backwards"), "{e}");
    let e = err_text(s.push_audio(&[0.0; 882], 44_100, 0, 0.02));
    assert!(e.contains("channel count 0"), "{e}");
    let e = err_text(s.push_audio(&[0.0; 882], 500, 2, 0.02));
    assert!(e.contains("500 Hz"), "{e}");

    let e = err_text(s.push_frame(&[0u8; 100], 10, 10, 1.0));
    assert!(e.contains("100 bytes") && e.contains("10x10") && e.contains("300"), "{e}");
    let e = err_text(s.push_frame(&[], 0, 10, 1.0));
    assert!(e.contains("0x10"), "{e}");
    let e = err_text(s.push_frame(&[0u8; 300], 10, 10, f64::NAN));
    assert!(e.contains("not finite"), "{e}");
    s.push_frame(&[0u8; 300], 10, 10, 1.0).unwrap();
    let e = err_text(s.push_frame(&[0u8; 300], 10, 10, 0.5));
    assert!(e.contains("backwards"), "{e}");
    // Errors leave the session usable.
    s.push_frame(&[0u8; 300], 10, 10, 1.5).unwrap();
    assert_eq!(s.stats().frames_pushed, 2);

    let bad = SessionOptions { hop: 9, ..Default::default() };
    let e = Session::new(model(), &bad).err().unwrap().to_string();
    assert!(e.contains("hop 9"), "{e}");
    let bad = SessionOptions { frame_queue: 3, ..Default::default() };
    let e = Session::new(model(), &bad).err().unwrap().to_string();
    assert!(e.contains("frame_queue 3"), "{e}");

    // Too little audio for one patch: finish says so instead of inventing a result.
    let mut s = Session::new(model(), &SessionOptions::default()).unwrap();
    s.push_audio(&[0.0; 8000], 16_000, 1, 0.0).unwrap();
    s.push_frame(&[0u8; 300], 10, 10, 0.9375).unwrap();
    let e = s.finish().err().unwrap().to_string();
    assert!(e.contains("0.975 s"), "{e}");
    let e = err_text(s.push_frame(&[0u8; 300], 10, 10, 2.0));
    assert!(e.contains("finished"), "{e}");
}

/// Per-frame mode is chosen, refused or declined for the stated reasons.
#[test]
fn stream_mode_choice() {
    use avseg::StreamMode;
    let opts = |mode, hop| SessionOptions { mode, hop, ..SessionOptions::default() };
    // Official TPAVI grouping (the tiny package): windows under Auto, an error when asked per frame.
    assert!(!Session::new(model(), &opts(StreamMode::Auto, 0)).unwrap().per_frame());
    let e = Session::new(model(), &opts(StreamMode::PerFrame, 0)).err().unwrap().to_string();
    assert!(e.contains("one frame at a time") && e.contains("groups of 5"), "{e}");
    // The default model: per frame unless windows are asked for, directly or by a hop.
    let default_model = repo().join("models/default");
    assert!(Session::new(&default_model, &opts(StreamMode::Auto, 0)).unwrap().per_frame());
    let windows = Session::new(&default_model, &opts(StreamMode::Auto, 2)).unwrap();
    assert!(!windows.per_frame() && windows.window_frames() == 5 && windows.hop() == 2);
    assert!(!Session::new(&default_model, &opts(StreamMode::Windows, 0)).unwrap().per_frame());
    let e = Session::new(&default_model, &opts(StreamMode::PerFrame, 3)).err().unwrap().to_string();
    assert!(e.contains("hop 3"), "{e}");
    // Sliding windows: official TPAVI only, and only when asked for.
    let e = Session::new(&default_model, &opts(StreamMode::Sliding, 0)).err().unwrap().to_string();
    assert!(e.contains("sliding") && e.contains("independent"), "{e}");
    let e = Session::new(model(), &opts(StreamMode::SlidingPadded, 2)).err().unwrap().to_string();
    assert!(e.contains("hop 2"), "{e}");
    assert_eq!(Session::new(model(), &opts(StreamMode::Auto, 0)).unwrap().mode(), StreamMode::Windows);
    assert_eq!(Session::new(&default_model, &opts(StreamMode::Auto, 0)).unwrap().mode(), StreamMode::PerFrame);
}
