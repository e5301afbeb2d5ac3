//! The C ABI from C and C++: builds the library (plain `cargo test` does not produce the
//! staticlib/cdylib), compiles `examples/c/*.c` (C99) and `examples/cpp/stream.cpp` (C++17) with
//! `-Wall -Wextra -Werror -pedantic` against `include/avseg.h`, and runs them on the bundled model
//! and sample clip: the stream examples, the hostile caller, both again under AddressSanitizer,
//! and the hostile caller against the shared library found through `avseg.pc.in` (under valgrind
//! with `AVSEG_VALGRIND=1`).
//!
//! A missing C or C++ compiler prints a `skipped:` line; under CI (`CI` set) it is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_abi").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `libavseg.a` and `libavseg.so` as built for this test run.
struct Library {
    dir: PathBuf,
}

impl Library {
    fn static_lib(&self) -> PathBuf {
        self.dir.join("libavseg.a")
    }
}

/// Builds the library once per test binary with the same target directory and profile as the
/// test itself, and hard-links the artefacts into this test's own folder: another `cargo build`
/// sharing the target directory may replace `target/<profile>/libavseg.*` at any moment, but
/// not the inode we hold.
fn library() -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        // <target>/<profile>/deps/c_abi-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).expect("test binary in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            // avseg-test-unify aligns a few low-level crates' features with the workspace's, so that
            // this build reuses what `cargo test` compiled (see its Cargo.toml).
            .args(["build", "-p", "avseg-ffi", "-p", "avseg-test-unify", "--lib", "--message-format=json-render-diagnostics", "--profile", profile])
            .arg("--manifest-path")
            .arg(repo().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "cargo build --lib failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let dir = work_dir("lib");
        let mut found = 0;
        let mut compiled = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if msg["reason"] == "compiler-artifact" && msg["fresh"] == false {
                compiled.push(msg["target"]["name"].as_str().unwrap_or("?").to_string());
            }
            if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != "avseg" {
                continue;
            }
            for f in msg["filenames"].as_array().into_iter().flatten() {
                let src = PathBuf::from(f.as_str().unwrap());
                let name = src.file_name().unwrap().to_str().unwrap().to_string();
                if name == "libavseg.a" || name == "libavseg.so" {
                    let dst = dir.join(&name);
                    let _ = std::fs::remove_file(&dst);
                    if std::fs::hard_link(&src, &dst).is_err() {
                        std::fs::copy(&src, &dst).unwrap();
                    }
                    found += 1;
                }
            }
        }
        assert_eq!(found, 2, "cargo build did not report libavseg.a and libavseg.so");
        // Expected: the runtime and the C library themselves (built without the file decoders),
        // plus the crates only they use. More means a feature difference avseg-test-unify misses.
        // Straight to stderr, past the harness's capture, so that CI logs show it.
        let _ = writeln!(std::io::stderr(), "c_abi: the library build compiled {} crates: {}", compiled.len(), compiled.join(" "));
        Library { dir }
    })
}

/// The system libraries a static link needs, read from `avseg.pc.in` so that its `Libs:` line is
/// what the tests prove.
fn system_libs() -> Vec<String> {
    let pc = std::fs::read_to_string(repo().join("crates/avseg-ffi/avseg.pc.in")).unwrap();
    let libs = pc.lines().find_map(|l| l.strip_prefix("Libs:")).expect("Libs: line in avseg.pc.in");
    libs.split_whitespace().filter(|t| t.starts_with("-l") && *t != "-lavseg").map(String::from).collect()
}

#[derive(Clone, Copy)]
enum Lang {
    C,
    Cxx,
}

/// The compiler for `lang` ($CC/$CXX or cc/c++), or None (with a visible skip line) when absent.
fn compiler(lang: Lang, test: &str) -> Option<String> {
    let (var, default) = match lang {
        Lang::C => ("CC", "cc"),
        Lang::Cxx => ("CXX", "c++"),
    };
    let cc = std::env::var(var).unwrap_or_else(|_| default.into());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Some(cc),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: no {default} compiler ({var}={cc})");
            }
            eprintln!("skipped: {test}: no {default} compiler found ({var}={cc})");
            None
        }
    }
}

/// Compiles and links one example against the static library; the warnings flags make any
/// warning in the header or the example a failure.
fn build(lang: Lang, cc: &str, source: &str, out: &Path, extra: &[&str]) {
    let std_flag = match lang {
        Lang::C => "-std=c99",
        Lang::Cxx => "-std=c++17",
    };
    let mut cmd = Command::new(cc);
    cmd.args([std_flag, "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .args(extra)
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join(source))
        .arg(library().static_lib())
        .args(system_libs())
        // tract's assembly objects carry no .note.GNU-stack; without this the linker warns and
        // marks the stack executable.
        .arg("-Wl,-z,noexecstack")
        .arg("-o")
        .arg(out);
    let o = cmd.output().expect("run the compiler");
    assert!(o.status.success(), "compiling {source} failed:\n{cmd:?}\n{}", String::from_utf8_lossy(&o.stderr));
}

fn run(cmd: &mut Command) -> (Output, String) {
    let o = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    (o, stdout)
}

/// The sample clip's PNG frames as binary PPM, which the dependency-free examples read.
fn sample_ppm_frames() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_dir("frames");
        for entry in std::fs::read_dir(repo().join("models/sample/frames")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "png") {
                let img = image::open(&path).unwrap().to_rgb8();
                let mut ppm = format!("P6\n# {}\n{} {}\n255\n", path.display(), img.width(), img.height()).into_bytes();
                ppm.extend_from_slice(img.as_raw());
                std::fs::write(dir.join(path.with_extension("ppm").file_name().unwrap()), ppm).unwrap();
            }
        }
        dir
    })
    .clone()
}

fn stream_args(cmd: &mut Command) -> &mut Command {
    cmd.arg(repo().join("models/tiny-tpavi")).arg(sample_ppm_frames()).arg(repo().join("models/sample/audio.wav")).arg("70")
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Checks a stream example's output: one result per sample frame, in order, at the AVSBench
/// sampling times, with masks, fractions, boxes and bearings that agree with each other.
/// The bundled sample's frame size.
const SAMPLE_W: u32 = 224;
const SAMPLE_H: u32 = 224;

fn check_stream_output(out: &str) {
    let results: Vec<&str> = out.lines().filter(|l| l.starts_with("result ")).collect();
    assert_eq!(results.len(), 5, "want 5 results:\n{out}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(field(r, "seq"), i.to_string(), "{r}");
        let t: f64 = field(r, "t").parse().unwrap();
        assert!((t - (i as f64 + 0.9375)).abs() < 1e-9, "{r}");
        assert_eq!(field(r, "size"), format!("{SAMPLE_W}x{SAMPLE_H}"), "{r}");
        let fg: f64 = field(r, "fg").parse().unwrap();
        let mask_fg: f64 = field(r, "mask_fg").parse().unwrap();
        assert!((0.0..=1.0).contains(&fg), "{r}");
        // The mask copied into the caller's buffer agrees with the reported fraction.
        assert!((mask_fg / f64::from(SAMPLE_W * SAMPLE_H) - fg).abs() < 1e-4, "{r}");
    }
    let objects: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("object ")).collect();
    let declared: usize = results.iter().map(|r| field(r, "objects").parse::<usize>().unwrap()).sum();
    assert_eq!(objects.len(), declared, "{out}");
    for o in &objects {
        let bbox: Vec<u32> = field(o, "bbox").split(',').map(|v| v.parse().unwrap()).collect();
        assert!(bbox[0] + bbox[2] <= SAMPLE_W && bbox[1] + bbox[3] <= SAMPLE_H, "{o}");
        let area: u64 = field(o, "area").parse().unwrap();
        assert!(area >= 16 && area <= u64::from(bbox[2] * bbox[3]), "{o}");
        let cx: f32 = field(o, "centroid").split(',').next().unwrap().parse().unwrap();
        let bearing: f32 = field(o, "bearing").parse().unwrap();
        // 70° lens: the pinhole bearing of the centroid, printed to 2 decimals.
        let half = SAMPLE_W as f32 / 2.0;
        let expect = (((cx - half) / half) * 35f32.to_radians().tan()).atan().to_degrees();
        // Tolerance: the centroid is printed to 0.1 px (±0.05 px, about 0.018° at the centre of a
        // 224-px frame) and the bearing to 0.01° (±0.005°).
        assert!((bearing - expect).abs() < 0.03, "{o}: want bearing {expect}");
        let conf: f32 = field(o, "conf").parse().unwrap();
        assert!((0.5..=1.0).contains(&conf), "{o}");
    }
    let summary = out.lines().find(|l| l.starts_with("summary ")).expect("summary line");
    assert_eq!(field(summary, "results"), "5", "{summary}");
    assert_eq!(field(summary, "frames_dropped"), "0", "{summary}");
}

/// Output without the wall-clock latencies and the C example's timing fields and mode line (the
/// C++ example prints neither), to compare two runs.
fn without_latency(out: &str) -> String {
    let timing = |t: &&str| !(t.starts_with("latency_ms=") || t.starts_with("lag_ms=") || t.starts_with("patch_end="));
    out.lines()
        .filter(|l| !l.starts_with("mode "))
        .map(|l| l.split_whitespace().filter(timing).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The C example on the default model, per frame: each result comes within 50 ms of audio after
/// the end of its frame's own audio patch (k + 0.975 s, read through `avseg_result_timing`): one
/// 10 ms chunk plus the 44.1 kHz resampler's delay (25 ms measured). In windows every frame waits
/// for the window's last frame (4.9375 s).
#[test]
fn c_example_prints_the_lag_of_per_frame_results() {
    let Some(cc) = compiler(Lang::C, "c_example_prints_the_lag_of_per_frame_results") else { return };
    let dir = work_dir("lag");
    build(Lang::C, &cc, "examples/c/stream.c", &dir.join("stream_c"), &[]);
    let args = |cmd: &mut Command, mode: &str| {
        cmd.arg(repo().join("models/default"))
            .arg(sample_ppm_frames())
            .arg(repo().join("models/sample/audio.wav"))
            .arg("70")
            .arg(mode);
    };
    for (mode, shown) in [("auto", "per-frame"), ("per-frame", "per-frame"), ("windows", "windows")] {
        let mut cmd = Command::new(dir.join("stream_c"));
        args(&mut cmd, mode);
        let (_, out) = run(&mut cmd);
        check_stream_output(&out);
        assert!(out.lines().any(|l| l == format!("mode {shown}")), "{out}");
        for (i, r) in out.lines().filter(|l| l.starts_with("result ")).enumerate() {
            let patch_end: f64 = field(r, "patch_end").parse().unwrap();
            let lag: f64 = field(r, "lag_ms").parse().unwrap();
            if shown == "per-frame" {
                assert!((patch_end - (i as f64 + 0.975)).abs() < 1e-3, "{r}");
                assert!((0.0..=50.0).contains(&lag), "{r}");
            } else {
                // Window 0: frame i's patch is the 0.975 s from 0.96·i s; all wait for frame 4.
                assert!((patch_end - (0.96 * i as f64 + 0.975)).abs() < 1e-3, "{r}");
                assert!(lag >= 4_937.5 - 975.0 - 960.0 * i as f64, "{r}");
            }
        }
    }
    // Official TPAVI (the tiny package) in sliding windows: each result as soon as its own patch
    // is in, as per frame; padded from the first frame, unpadded only once 5 frames are in.
    for (mode, first) in [("sliding-padded", 0u64), ("sliding", 4)] {
        let mut cmd = Command::new(dir.join("stream_c"));
        cmd.arg(repo().join("models/tiny-tpavi")).arg(sample_ppm_frames()).arg(repo().join("models/sample/audio.wav")).arg("70").arg(mode);
        let (_, out) = run(&mut cmd);
        assert!(out.lines().any(|l| l == format!("mode {mode}")), "{out}");
        let results: Vec<&str> = out.lines().filter(|l| l.starts_with("result ")).collect();
        assert_eq!(results.len() as u64, 5 - first, "{out}");
        for r in results {
            let seq: u64 = field(r, "seq").parse().unwrap();
            assert!(seq >= first, "{r}");
            let patch_end: f64 = field(r, "patch_end").parse().unwrap();
            let lag: f64 = field(r, "lag_ms").parse().unwrap();
            assert!((patch_end - (seq as f64 + 0.975)).abs() < 1e-3, "{r}");
            assert!((0.0..=50.0).contains(&lag), "{r}");
        }
    }
}

/// The C and C++ stream examples on the sample clip; both must print the same results.
#[test]
fn stream_examples_in_c_and_cpp() {
    let test = "stream_examples_in_c_and_cpp";
    let dir = work_dir("stream");
    let mut c_out = None;
    if let Some(cc) = compiler(Lang::C, test) {
        build(Lang::C, &cc, "examples/c/stream.c", &dir.join("stream_c"), &[]);
        let (_, out) = run(stream_args(&mut Command::new(dir.join("stream_c"))));
        check_stream_output(&out);
        c_out = Some(out);
    }
    if let Some(cxx) = compiler(Lang::Cxx, test) {
        build(Lang::Cxx, &cxx, "examples/cpp/stream.cpp", &dir.join("stream_cpp"), &[]);
        let (_, out) = run(stream_args(&mut Command::new(dir.join("stream_cpp"))));
        check_stream_output(&out);
        if let Some(c_out) = c_out {
            assert_eq!(without_latency(&out), without_latency(&c_out));
        }
    }
}

fn check_hostile_output(out: &str) {
    assert!(!out.contains("FAIL"), "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("hostile: ") && last.ends_with(" checks, 0 failures"), "{out}");
    let checks: usize = last.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(checks >= 100, "{last}");
}

#[test]
fn hostile_c_caller_gets_statuses_not_crashes() {
    let Some(cc) = compiler(Lang::C, "hostile_c_caller_gets_statuses_not_crashes") else { return };
    let exe = work_dir("hostile").join("hostile");
    build(Lang::C, &cc, "examples/c/hostile.c", &exe, &[]);
    let (o, out) = run(Command::new(&exe).arg(repo().join("models/tiny-tpavi")));
    check_hostile_output(&out);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"), "a panic message reached stderr");
}

/// ASan instruments the C side and replaces malloc/free for the whole process, so an overrun of
/// a caller buffer, a use after free or a leak across the boundary fails the run.
#[test]
fn hostile_and_stream_under_address_sanitizer() {
    let test = "hostile_and_stream_under_address_sanitizer";
    let Some(cc) = compiler(Lang::C, test) else { return };
    let dir = work_dir("asan");
    let asan = ["-fsanitize=address", "-fno-omit-frame-pointer"];
    build(Lang::C, &cc, "examples/c/hostile.c", &dir.join("hostile"), &asan);
    build(Lang::C, &cc, "examples/c/stream.c", &dir.join("stream"), &asan);
    let env = ("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86");
    let (o, out) = run(Command::new(dir.join("hostile")).arg(repo().join("models/tiny-tpavi")).env(env.0, env.1));
    check_hostile_output(&out);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Sanitizer"), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, out) = run(stream_args(Command::new(dir.join("stream")).env(env.0, env.1)));
    check_stream_output(&out);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Sanitizer"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Links the hostile caller against the shared library with the flags `pkg-config` reads from
/// `avseg.pc.in` and runs it. With `AVSEG_VALGRIND=1` it runs under valgrind's memcheck instead
/// (about 6 minutes on 2 cores, so not by default; the ASan test covers the same ground faster).
#[test]
fn pkg_config_links_the_shared_library() {
    let test = "pkg_config_links_the_shared_library";
    let Some(cc) = compiler(Lang::C, test) else { return };
    if Command::new("pkg-config").arg("--version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: pkg-config is not installed");
        }
        eprintln!("skipped: {test}: pkg-config is not installed");
        return;
    }
    let lib = library();
    let dir = work_dir("pkg_config");
    let pc = std::fs::read_to_string(repo().join("crates/avseg-ffi/avseg.pc.in"))
        .unwrap()
        .replace("@PREFIX@", "/usr/local")
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(dir.join("avseg.pc"), pc).unwrap();
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "avseg"])
        .arg(format!("--define-variable=libdir={}", lib.dir.display()))
        .arg(format!("--define-variable=includedir={}", repo().join("include").display()))
        .env("PKG_CONFIG_PATH", &dir)
        .output()
        .unwrap();
    assert!(flags.status.success(), "pkg-config: {}", String::from_utf8_lossy(&flags.stderr));
    let flags = String::from_utf8(flags.stdout).unwrap();
    let version = Command::new("pkg-config").args(["--modversion", "avseg"]).env("PKG_CONFIG_PATH", &dir).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), env!("CARGO_PKG_VERSION"));

    let exe = dir.join("hostile_shared");
    // With both libavseg.a and libavseg.so in libdir, -lavseg picks the shared one.
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(repo().join("examples/c/hostile.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.dir.display()))
        .arg("-o")
        .arg(&exe);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}\n{}", String::from_utf8_lossy(&o.stderr));
    let ldd = Command::new("ldd").arg(&exe).output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    assert!(ldd.is_empty() || ldd.contains("libavseg.so"), "not linked to the shared library:\n{ldd}");

    let model = repo().join("models/tiny-tpavi");
    let valgrind = std::env::var_os("AVSEG_VALGRIND").is_some();
    if valgrind {
        let found = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "{test}: AVSEG_VALGRIND is set but valgrind is not installed");
    }
    let (o, out) = if valgrind {
        run(Command::new("valgrind")
            .args(["--error-exitcode=97", "--leak-check=full", "--errors-for-leak-kinds=definite", "--quiet"])
            .arg(&exe)
            .arg(&model))
    } else {
        run(Command::new(&exe).arg(&model))
    };
    check_hostile_output(&out);
    if valgrind {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("definitely lost") && !stderr.contains("Invalid "), "{stderr}");
    }
}
