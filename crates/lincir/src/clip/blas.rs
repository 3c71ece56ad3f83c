//! An optional BLAS for the frozen f32 products on the CPU, loaded at run time.
//!
//! candle's own kernel (the `gemm` crate) is the default: no system library, one-command build.
//! A tuned BLAS is faster on some CPUs (docs/PERFORMANCE.md has the measurements), so a user who
//! has one can point lincir at it without rebuilding: `LINCIR_BLAS=openblas` (or `mkl`, `blis`,
//! or a path to any library with the standard 32-bit-integer `cblas_sgemm`). Loading at run time
//! rather than linking keeps the default build free of system dependencies, and lets the same
//! binary use whichever library the machine has.
//!
//! Only the products with a frozen weight ([`super::nn::Linear`], forward and input gradient)
//! go through it: they are ~95% of CLIP's arithmetic.

use std::ffi::c_int;
use std::sync::OnceLock;

use crate::{Error, Result};

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

type Sgemm = unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int);

/// A loaded BLAS.
pub struct Blas {
    /// The file that was loaded.
    pub library: String,
    sgemm: Sgemm,
    _lib: libloading::Library,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

/// The libraries each short name stands for, in the order they are tried (Linux, macOS, then the
/// names of the Windows builds: OpenBLAS's releases, `pip install mkl`'s `Library\bin`).
fn candidates(name: &str) -> Vec<String> {
    let list: &[&str] = match name {
        "openblas" => &["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "libopenblas.dll", "openblas.dll"],
        "mkl" => &["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.dylib", "mkl_rt.2.dll", "mkl_rt.dll"],
        "blis" => &["libblis.so.4", "libblis.so", "libblis.dylib", "libblis.dll"],
        path => return vec![path.to_string()],
    };
    list.iter().map(|s| s.to_string()).collect()
}

/// Loads the BLAS a user asked for (`LINCIR_BLAS`, or the argument): `builtin` (or unset) keeps
/// candle's kernel. Only the first call has an effect; a library that cannot be loaded is an
/// error naming what was tried.
pub fn configure(choice: Option<&str>) -> Result<Option<&'static Blas>> {
    let choice = choice.map(str::to_string).or_else(|| std::env::var("LINCIR_BLAS").ok()).unwrap_or_default();
    if let Some(done) = BLAS.get() {
        return Ok(done.as_ref());
    }
    let loaded = match choice.trim() {
        "" | "builtin" => None,
        name => Some(load(name)?),
    };
    Ok(BLAS.get_or_init(|| loaded).as_ref())
}

/// The loaded BLAS, if any: configured by the command line at start, or on first use from
/// `LINCIR_BLAS` (a library that cannot be loaded then is reported once, and the builtin kernel
/// is used).
pub fn active() -> Option<&'static Blas> {
    if let Some(done) = BLAS.get() {
        return done.as_ref();
    }
    configure(None).unwrap_or_else(|e| {
        eprintln!("warning: {e}");
        BLAS.get_or_init(|| None).as_ref()
    })
}

/// A short description: `builtin (candle gemm)` or the library file.
pub fn describe() -> String {
    match active() {
        Some(b) => b.library.clone(),
        None if super::panel::enabled() => format!("builtin (packed panels, {})", super::panel::isa().name()),
        None => "builtin (candle gemm)".to_string(),
    }
}

/// Loads a BLAS by short name (`openblas`, `mkl`, `blis`) or path, without making it the one
/// lincir uses (`lincir bench matmul` compares several in one run).
pub fn load(name: &str) -> Result<Blas> {
    let tried = candidates(name);
    for file in &tried {
        // SAFETY: loading runs the library's initialisers; these are the BLAS libraries users
        // installed (or named) themselves.
        let Ok(lib) = (unsafe { libloading::Library::new(file) }) else { continue };
        // SAFETY: `cblas_sgemm` has this C signature in every CBLAS with 32-bit integers.
        let sgemm: Sgemm = match unsafe { lib.get::<Sgemm>(b"cblas_sgemm\0") } {
            Ok(f) => *f,
            Err(_) => return Err(Error::Invalid(format!("LINCIR_BLAS: {file} has no cblas_sgemm"))),
        };
        // MKL's default threading layer needs Intel's OpenMP, which `pip install mkl` does not
        // bring; GNU's libgomp is on every Linux with a C compiler. MKL_THREADING_LAYER overrides.
        // (On Windows `pip install mkl` brings Intel's OpenMP, and MKL has no GNU layer there.)
        if !cfg!(windows) && std::env::var_os("MKL_THREADING_LAYER").is_none() {
            // SAFETY: MKL_Set_Threading_Layer takes one int (MKL_THREADING_GNU = 3).
            if let Ok(f) = unsafe { lib.get::<unsafe extern "C" fn(c_int) -> c_int>(b"MKL_Set_Threading_Layer\0") } {
                unsafe { f(3) };
            }
        }
        set_threads(&lib, rayon::current_num_threads());
        return Ok(Blas { library: file.clone(), sgemm, _lib: lib });
    }
    Err(Error::Invalid(format!(
        "LINCIR_BLAS={name}: cannot load {} (install it, or unset LINCIR_BLAS for the builtin kernel)",
        tried.join(" or ")
    )))
}

/// Gives the library as many threads as lincir's pool, through whichever setter it has.
fn set_threads(lib: &libloading::Library, n: usize) {
    let n = n as c_int;
    // SAFETY: each symbol, where present, takes one int (MKL's by value as well).
    unsafe {
        if let Ok(f) = lib.get::<unsafe extern "C" fn(c_int)>(b"openblas_set_num_threads\0") {
            f(n);
        }
        if let Ok(f) = lib.get::<unsafe extern "C" fn(c_int)>(b"MKL_Set_Num_Threads\0") {
            f(n);
        }
        if let Ok(f) = lib.get::<unsafe extern "C" fn(c_int)>(b"bli_thread_set_num_threads\0") {
            f(n);
        }
    }
}

impl Blas {
    /// `c[m, n] = a[m, k] · b` with `b` row-major `[k, n]`, or `[n, k]` when `b_transposed`.
    pub fn matmul(&self, a: &[f32], b: &[f32], m: usize, n: usize, k: usize, b_transposed: bool) -> Result<Vec<f32>> {
        if a.len() != m * k || b.len() != k * n {
            return Err(Error::Invalid(format!("blas: {} and {} values do not make a {m}x{k} by {k}x{n} product", a.len(), b.len())));
        }
        let fits = |v: usize| c_int::try_from(v).is_ok();
        if ![m, n, k, m * k, k * n, m * n].into_iter().all(fits) {
            return Err(Error::Invalid(format!("blas: a {m}x{k} by {k}x{n} product is beyond 32-bit indices")));
        }
        let mut c = vec![0f32; m * n];
        if m == 0 || n == 0 {
            return Ok(c);
        }
        let (tb, ldb) = if b_transposed { (TRANS, k) } else { (NO_TRANS, n) };
        // SAFETY: the slices have the sizes checked above and the leading dimensions match them.
        unsafe {
            (self.sgemm)(ROW_MAJOR, NO_TRANS, tb, m as c_int, n as c_int, k as c_int, 1.0, a.as_ptr(), k.max(1) as c_int, b.as_ptr(), ldb.max(1) as c_int, 0.0, c.as_mut_ptr(), n as c_int);
        }
        Ok(c)
    }
}
