//! NVRTC, loaded at run time: compiles a kernel file to a CUBIN for one exact architecture.
//!
//! Only `libnvrtc` (and the `libnvrtc-builtins` it loads itself) is needed: no driver, no GPU. That
//! is what lets CI and `avseg kernels --check` compile every kernel on a machine without either.

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use cudarc::nvrtc::{result, sys};

use super::kernels::{Arch, KernelFile};
use super::CudaError;

/// The names cudarc's loader tries, for error messages (it searches the usual dlopen paths and
/// `LD_LIBRARY_PATH`, versioned names such as `libnvrtc.so.12` included).
const LIBRARY: &str = "libnvrtc.so (or libnvrtc.so.12 / .13)";

/// A handle proving libnvrtc was found and answers. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Nvrtc {
    pub version: (i32, i32),
}

impl Nvrtc {
    /// Finds libnvrtc and reads its version. The lookup is done once per process.
    pub fn load() -> Result<Nvrtc, CudaError> {
        static LOADED: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
        LOADED.get_or_init(probe).clone().map_err(|detail| CudaError::NoNvrtc { library: LIBRARY, detail })
    }

    /// Compiles `file` for `arch` and returns the CUBIN. A compile error carries NVRTC's log.
    pub fn compile_cubin(&self, file: &KernelFile, arch: Arch) -> Result<Vec<u8>, CudaError> {
        let fail = |detail: String, log: String| CudaError::Compile {
            kernel: file.name.to_string(),
            arch: arch.to_string(),
            detail,
            log,
        };
        let source =
            CString::new(file.full_source()).map_err(|_| fail("source contains a NUL byte".into(), String::new()))?;
        let name = CString::new(format!("{}.cu", file.name)).map_err(|_| fail("bad name".into(), String::new()))?;
        let options = file.nvrtc_options(arch);
        // Everything below calls into a dlopen'ed library through cudarc, which panics if a symbol
        // is missing (a truncated or foreign libnvrtc): contain that as an error.
        let run = || -> Result<Vec<u8>, CudaError> {
            let prog = result::create_program(&source, Some(name.as_c_str()))
                .map_err(|e| fail(format!("nvrtcCreateProgram: {e}"), String::new()))?;
            let _guard = ProgramGuard(prog);
            let compiled = unsafe { result::compile_program(prog, &options) };
            let log = unsafe { result::get_program_log(prog) }.map(|l| c_chars_to_string(&l)).unwrap_or_default();
            if let Err(e) = compiled {
                return Err(fail(format!("{e:?} with options {}", options.join(" ")), log));
            }
            if !log.trim().is_empty() {
                log::debug!("NVRTC {} {arch}: {}", file.name, log.trim());
            }
            let mut size = 0usize;
            unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e}"), log.clone()))?;
            if size == 0 {
                return Err(fail("NVRTC produced an empty CUBIN".into(), log));
            }
            let mut cubin = vec![0u8; size];
            unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char) }
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBIN: {e}"), log))?;
            Ok(cubin)
        };
        catch_unwind(AssertUnwindSafe(run))
            .unwrap_or_else(|p| Err(fail(format!("NVRTC panicked: {}", crate::error::panic_message(&*p)), String::new())))
    }

    /// The `sm_XY` architectures this NVRTC can compile for.
    pub fn supported_archs(&self) -> Vec<Arch> {
        let read = || -> Option<Vec<Arch>> {
            let mut n: c_int = 0;
            unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }.result().ok()?;
            let mut v = vec![0 as c_int; usize::try_from(n).ok()?];
            unsafe { sys::nvrtcGetSupportedArchs(v.as_mut_ptr()) }.result().ok()?;
            Some(
                v.into_iter()
                    .filter_map(|a| u32::try_from(a).ok())
                    .map(|a| Arch { major: a / 10, minor: a % 10 })
                    .collect(),
            )
        };
        catch_unwind(read).ok().flatten().unwrap_or_default()
    }
}

fn probe() -> Result<Nvrtc, String> {
    let found = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
    if !found {
        return Err("not found by the dynamic loader; install NVRTC (JetPack / the CUDA toolkit, or the \
                    `nvidia-cuda-nvrtc-cu12` wheel) and put its lib folder on LD_LIBRARY_PATH"
            .into());
    }
    catch_unwind(|| {
        let (mut major, mut minor) = (0, 0);
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map(|()| Nvrtc { version: (major, minor) })
    })
    .map_err(|p| format!("loading it panicked: {}", crate::error::panic_message(&*p)))?
    .map_err(|e| format!("nvrtcVersion failed: {e}"))
}

struct ProgramGuard(sys::nvrtcProgram);

impl Drop for ProgramGuard {
    fn drop(&mut self) {
        let prog = self.0;
        // A failure to free a program leaks it; there is nothing better to do in a destructor.
        let _ = catch_unwind(|| unsafe { result::destroy_program(prog) });
    }
}

// c_char is i8 on x86_64 and u8 on aarch64: the cast is needed on one of them.
#[allow(clippy::unnecessary_cast)]
fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::kernels::{ALL, DECODER};

    /// Runs where libnvrtc is on the loader path (tools/test.sh puts the wheel's there only for
    /// `avseg kernels --check`; run with LD_LIBRARY_PATH set to exercise this here).
    #[test]
    fn compile_errors_carry_the_log_and_good_kernels_have_their_entry_points() {
        let nvrtc = match Nvrtc::load() {
            Ok(n) => n,
            Err(e) => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: NVRTC compile test ({e})");
                return;
            }
        };
        let arch = Arch::parse("sm_87").unwrap();
        let broken = KernelFile { source: "extern \"C\" __global__ void f() { undefined_name = 1; }", ..DECODER };
        match nvrtc.compile_cubin(&broken, arch) {
            Err(CudaError::Compile { kernel, log, .. }) => {
                assert_eq!(kernel, "decoder");
                assert!(log.contains("undefined_name") && log.contains("decoder.cu(1)"), "{log}");
            }
            other => panic!("expected a compile error, got {other:?}"),
        }
        for k in ALL {
            let cubin = nvrtc.compile_cubin(k, arch).unwrap();
            assert!(cubin.starts_with(b"\x7fELF"));
            assert!(k.missing_entry_points(&cubin).is_empty(), "{}", k.name);
        }
        assert!(nvrtc.supported_archs().contains(&arch));
    }
}
