//! Products through a frozen f32 or bf16 weight on CPUs with AVX2, the weight packed once at load.
//!
//! A blocked product in the manner of BLIS/GotoBLAS. The weight `[input, output]` is stored as
//! panels of 16 output columns (each input row's 16 weights contiguous, zero-padded past the last
//! column), so no product packs it again: a query's dozen rows stream it from memory once, in
//! order, and a batch's thousands of rows read each panel from the cache. Each thread owns a band
//! of panels; for each block of 256 input columns it packs a block of input rows into 6-row
//! panels, and a micro-kernel keeps a block of outputs in registers while it walks one input
//! panel against one or two weight panels (all in L1): 6 x 16 with AVX2, 6 x 32 with AVX-512,
//! and for bf16 weights on CPUs with AVX512_BF16, `vdpbf16ps` on bf16 input pairs ([`Isa`]).
//!
//! The input gradient `g · Wᵀ` (training) reads the same panels transposed: it packs them per
//! product into the layout above, which costs a pass over the weight.
//!
//! The packed form replaces the tensor (memory stays that of the model). Measured with
//! `lincir bench matmul`: docs/PERFORMANCE.md. CPUs without AVX2 keep the tensor and candle's
//! kernel.

// Elsewhere than x86_64 no kernel exists ([`available`] is false): the callers use candle's
// products, and the kernels' helpers are unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_macros, unused_mut))]

use rayon::prelude::*;

/// Rows of the micro-kernel's output block.
const MR: usize = 6;
/// Columns of the micro-kernel's output block (two 8-lane vectors); the width of a panel.
const NR: usize = 16;
/// Depth of one pass: an input panel (6 x 256 floats, 6 KiB) and a weight panel (256 x 16,
/// 16 KiB) stay in a 32 KiB L1 cache together.
const KC: usize = 256;
/// Input rows packed at once (96 x 256 floats, 96 KiB: in L2).
const MC: usize = 96;
const _: () = assert!(MC.is_multiple_of(MR), "input blocks hold whole panels");

/// Whether this CPU has the micro-kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether layers pack their weights for the micro-kernel: on AVX2 CPUs, unless
/// `LINCIR_PACKED_WEIGHTS=0` (a diagnostic: candle's kernel instead, for comparisons).
pub fn enabled() -> bool {
    available() && std::env::var("LINCIR_PACKED_WEIGHTS").map_or(true, |v| v != "0")
}

/// The micro-kernels a CPU can run, narrowest first. All keep a 6-row block of outputs in
/// registers; they differ in vector width and, for bf16 weights, in the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// 8-lane f32 FMA, one 16-column panel at a time (bf16 weights widened in registers).
    Avx2,
    /// 16-lane f32 FMA, two panels (32 columns) at a time (bf16 weights widened in registers).
    Avx512,
    /// As `Avx512` for f32 weights; bf16 weights multiply bf16-rounded inputs with `vdpbf16ps`
    /// (two products per lane and instruction, accumulated in f32), as PyTorch's bf16 does.
    Avx512Bf16,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512_bf16",
        }
    }

    /// The kernels this CPU can run, narrowest first (empty without AVX2 and FMA). Detected
    /// once: every product checks its kernel against it.
    pub fn supported() -> &'static [Isa] {
        static SUPPORTED: std::sync::OnceLock<Vec<Isa>> = std::sync::OnceLock::new();
        SUPPORTED.get_or_init(|| {
            let mut out = Vec::new();
            #[cfg(target_arch = "x86_64")]
            if available() {
                out.push(Isa::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    out.push(Isa::Avx512);
                    if std::arch::is_x86_feature_detected!("avx512bf16") {
                        out.push(Isa::Avx512Bf16);
                    }
                }
            }
            out
        })
    }

    /// Weight panels one micro-kernel call covers.
    fn panels_per_call(self) -> usize {
        if self == Isa::Avx2 { 1 } else { 2 }
    }
}

/// The kernel the products use: the widest this CPU has, or at most `LINCIR_KERNEL`
/// (`avx2`, `avx512`, `avx512_bf16`: for comparisons and tests). Chosen once.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::supported().last().copied().unwrap_or(Isa::Avx2);
        match std::env::var("LINCIR_KERNEL") {
            Ok(v) if !v.is_empty() => match [Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16].into_iter().find(|i| i.name() == v) {
                Some(cap) => best.min(cap),
                None => {
                    eprintln!("warning: LINCIR_KERNEL={v} is not one of avx2, avx512, avx512_bf16; using {}", best.name());
                    best
                }
            },
            _ => best,
        }
    })
}

/// A weight element: f32, or bf16 (the CPU's `--dtype bf16`: half the bytes to stream; widened
/// to f32 in registers, or multiplied as bf16 by `vdpbf16ps` where the CPU has it).
pub trait Element: Copy + Default + Send + Sync + 'static {
    /// Whether a panel holds its rows in pairs (`[k/2][16][2]`, the depth rounded up to even):
    /// one 32-bit lane then holds the two weights `vdpbf16ps` multiplies into one output, and
    /// one load widens into the weights of two rows.
    const PAIRED: bool;
    fn to_f32(self) -> f32;
    /// One block of `rows` (≤ 6) x `np * 16` outputs over `kc` depth steps (see [`micro`]).
    ///
    /// # Safety
    /// As [`micro`], with a full-width block.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(isa: Isa, kc: usize, x: InputPanel, w: *const Self, wstride: usize, np: usize, y: *mut f32, ldy: usize, accumulate: bool, rows: usize);
}

/// A packed input panel: f32 rows, or bf16 pairs (for `vdpbf16ps`).
#[derive(Clone, Copy)]
pub enum InputPanel {
    F32(*const f32),
    Pairs(*const u32),
}

impl InputPanel {
    fn f32(self) -> *const f32 {
        match self {
            InputPanel::F32(p) => p,
            InputPanel::Pairs(_) => unreachable!("f32 kernels get f32 input panels"),
        }
    }
    fn pairs(self) -> *const u32 {
        match self {
            InputPanel::Pairs(p) => p,
            InputPanel::F32(_) => unreachable!("vdpbf16ps gets bf16 pairs"),
        }
    }
}

/// Where an f32 micro-kernel reads input value `(row r, depth i)` of its block: a packed panel,
/// or rows in place. Both kernels add the same products in the same order, so a product's result
/// does not depend on which one read its input.
trait InputAccess: Copy {
    /// # Safety
    /// `r` < the block's rows and `i` < its depth.
    unsafe fn at(self, i: usize, r: usize) -> *const f32;
}

/// A packed input panel ([`pack_input`]): depth step `i` holds the block's rows contiguously.
#[derive(Clone, Copy)]
struct PackedPanel(*const f32);

impl InputAccess for PackedPanel {
    #[inline(always)]
    unsafe fn at(self, i: usize, r: usize) -> *const f32 {
        self.0.add(i * MR + r)
    }
}

/// Rows in place, `ld` floats apart: small products whose input is already in the cache
/// (attention's, [`matmul_rows_serial`]), where packing would cost as much as it saves.
#[derive(Clone, Copy)]
struct InPlaceRows {
    first: *const f32,
    ld: usize,
}

impl InputAccess for InPlaceRows {
    #[inline(always)]
    unsafe fn at(self, i: usize, r: usize) -> *const f32 {
        self.first.add(r * self.ld + i)
    }
}

/// Calls `$kernel::<R, ...>` with R the block's row count (1 to 6) as a constant.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident [$($g:tt),*] ($($arg:expr),* $(,)?)) => {
        match $rows {
            6 => $kernel::<6, $($g),*>($($arg),*),
            5 => $kernel::<5, $($g),*>($($arg),*),
            4 => $kernel::<4, $($g),*>($($arg),*),
            3 => $kernel::<3, $($g),*>($($arg),*),
            2 => $kernel::<2, $($g),*>($($arg),*),
            _ => $kernel::<1, $($g),*>($($arg),*),
        }
    };
}

impl Element for f32 {
    const PAIRED: bool = false;
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn block(isa: Isa, kc: usize, x: InputPanel, w: *const f32, wstride: usize, np: usize, y: *mut f32, ldy: usize, accumulate: bool, rows: usize) {
        f32_block(isa, kc, PackedPanel(x.f32()), w, wstride, np, y, ldy, accumulate, rows)
    }
}

/// [`Element::block`] for f32 weights, the input read through `x` (packed, or rows in place).
///
/// # Safety
/// As [`micro`], with a full-width block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn f32_block<X: InputAccess>(isa: Isa, kc: usize, x: X, w: *const f32, wstride: usize, np: usize, y: *mut f32, ldy: usize, accumulate: bool, rows: usize) {
    #[cfg(target_arch = "x86_64")]
    match (isa, np) {
        (Isa::Avx2, _) => by_rows!(rows, avx2_f32[X](kc, x, w, y, ldy, accumulate)),
        (_, 1) => by_rows!(rows, avx512_f32[1, X](kc, x, w, wstride, y, ldy, accumulate)),
        _ => by_rows!(rows, avx512_f32[2, X](kc, x, w, wstride, y, ldy, accumulate)),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, kc, x, w, wstride, np, y, ldy, accumulate, rows);
}

impl Element for half::bf16 {
    const PAIRED: bool = true;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[inline(always)]
    unsafe fn block(isa: Isa, kc: usize, x: InputPanel, w: *const half::bf16, wstride: usize, np: usize, y: *mut f32, ldy: usize, accumulate: bool, rows: usize) {
        // A pair of bf16 weights is one 32-bit lane; the stride between panels is in bf16.
        let (w, wstride) = (w as *const u32, wstride / 2);
        #[cfg(target_arch = "x86_64")]
        match (isa, np) {
            (Isa::Avx2, _) => by_rows!(rows, avx2_bf16[](kc, x.f32(), w, y, ldy, accumulate)),
            (Isa::Avx512, 1) => by_rows!(rows, avx512_bf16_widened[1](kc, x.f32(), w, wstride, y, ldy, accumulate)),
            (Isa::Avx512, _) => by_rows!(rows, avx512_bf16_widened[2](kc, x.f32(), w, wstride, y, ldy, accumulate)),
            (Isa::Avx512Bf16, 1) => by_rows!(rows, avx512_dpbf16[1](kc, x.pairs(), w, wstride, y, ldy, accumulate)),
            (Isa::Avx512Bf16, _) => by_rows!(rows, avx512_dpbf16[2](kc, x.pairs(), w, wstride, y, ldy, accumulate)),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (isa, kc, x, w, wstride, np, y, ldy, accumulate, rows);
    }
}

/// A frozen `[k, n]` weight (`y = x · W`) as panels of 16 columns, in blocks of 256 rows: block
/// `b` holds, panel after panel, rows `256b..256b+256` of each panel (each row's 16 weights
/// contiguous, zeros past the last column; for bf16, rows in pairs, see [`Element::PAIRED`]). A
/// pass over one block reads memory in order, which the hardware prefetchers follow.
pub struct Packed<E = f32> {
    k: usize,
    n: usize,
    panels: Vec<E>,
    /// Wᵀ packed the same way, made on the first input-gradient product (training) and kept:
    /// gathering Wᵀ's panels from W's on every product cost about 5% of a training step. It
    /// doubles the memory of a layer that trains through it, and nothing for inference.
    transposed: std::sync::OnceLock<Box<Packed<E>>>,
}

/// The rows a panel stores for `k` rows of weight: `k`, or for paired elements `k` rounded up
/// to even (a zero row completes the last pair).
fn stored_depth<E: Element>(k: usize) -> usize {
    if E::PAIRED { k.next_multiple_of(2) } else { k }
}

impl<E: Element> Packed<E> {
    /// Packs a row-major `[k, n]` matrix.
    pub fn new(w: &[E], k: usize, n: usize) -> Option<Self> {
        if k == 0 || n == 0 || w.len() != k * n {
            return None;
        }
        let mut packed = Packed { k, n, panels: vec![E::default(); n.div_ceil(NR) * NR * stored_depth::<E>(k)], transposed: std::sync::OnceLock::new() };
        for r in 0..k {
            for p in 0..n.div_ceil(NR) {
                let (c0, cols) = (p * NR, NR.min(n - p * NR));
                // Consecutive columns of a row are 1 apart, or 2 in pairs.
                let (at, step) = (packed.offset(r, c0), if E::PAIRED { 2 } else { 1 });
                for (c, &v) in w[r * n + c0..][..cols].iter().enumerate() {
                    packed.panels[at + c * step] = v;
                }
            }
        }
        Some(packed)
    }

    /// The panels' memory, for packing another weight of the same element type into it.
    pub fn into_buffer(self) -> Vec<E> {
        self.panels
    }
}

impl Packed<f32> {
    /// `W[i, j] = src[i * ld + j]` for a `k x n` weight whose rows lie `ld` floats apart (the
    /// value rows of one attention head), packed into `buffer`'s memory.
    pub fn from_rows(buffer: Vec<f32>, src: &[f32], ld: usize, k: usize, n: usize) -> Option<Self> {
        let mut packed = Self::empty(buffer, k, n, (k, n), src.len(), ld)?;
        for i in 0..k {
            let row = &src[i * ld..][..n];
            for (p, part) in row.chunks(NR).enumerate() {
                let at = packed.offset(i, p * NR);
                packed.panels[at..at + part.len()].copy_from_slice(part);
            }
        }
        Some(packed)
    }

    /// `W[i, j] = src[j * ld + i]`: the transpose of `n` rows of `k` values, `ld` floats apart
    /// (`Kᵀ` from one attention head's key rows), packed into `buffer`'s memory.
    pub fn from_transposed_rows(buffer: Vec<f32>, src: &[f32], ld: usize, k: usize, n: usize) -> Option<Self> {
        let mut packed = Self::empty(buffer, k, n, (n, k), src.len(), ld)?;
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            for j in 0..n {
                let at = packed.offset(pc, j);
                let column = &src[j * ld + pc..][..kc];
                for (i, &v) in column.iter().enumerate() {
                    packed.panels[at + i * NR] = v;
                }
            }
        }
        Some(packed)
    }

    /// A zeroed `k x n` weight in `buffer`'s memory, where the source's `rows` rows of `width`
    /// values, `ld` apart, fit in its `len`.
    fn empty(mut buffer: Vec<f32>, k: usize, n: usize, (rows, width): (usize, usize), len: usize, ld: usize) -> Option<Self> {
        if k == 0 || n == 0 || !rows_fit(len, rows, width, ld) {
            return None;
        }
        buffer.clear();
        buffer.resize(n.div_ceil(NR) * NR * k, 0.0);
        Some(Packed { k, n, panels: buffer, transposed: std::sync::OnceLock::new() })
    }
}

impl<E: Element> Packed<E> {
    /// Where `W[r, c]` is.
    fn offset(&self, r: usize, c: usize) -> usize {
        let pc = r / KC * KC;
        let (i, kc) = (r - pc, stored_depth::<E>(KC.min(self.k - pc)));
        let within = if E::PAIRED { i / 2 * 2 * NR + c % NR * 2 + i % 2 } else { i * NR + c % NR };
        pc * self.n.div_ceil(NR) * NR + (c / NR) * kc * NR + within
    }

    /// Rows (input width) of W.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns (output width) of W.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// `W[r, c]`.
    fn at(&self, r: usize, c: usize) -> E {
        self.panels[self.offset(r, c)]
    }

    /// Wᵀ (`[n, k]`), packed.
    fn transposed(&self) -> &Packed<E> {
        self.transposed.get_or_init(|| {
            let (k, n) = (self.k, self.n);
            let mut t = vec![E::default(); k * n];
            for r in 0..k {
                for c in 0..n {
                    t[c * k + r] = self.at(r, c);
                }
            }
            Box::new(Packed::new(&t, n, k).expect("a non-empty weight has a non-empty transpose"))
        })
    }

    /// The row-major `[k, n]` matrix back.
    #[cfg(test)]
    fn unpack(&self) -> Vec<E> {
        let mut w = Vec::with_capacity(self.k * self.n);
        for r in 0..self.k {
            w.extend((0..self.n).map(|c| self.at(r, c)));
        }
        w
    }
}

/// A packed weight of either element type.
pub enum Frozen {
    F32(Packed<f32>),
    Bf16(Packed<half::bf16>),
}

impl Frozen {
    pub fn rows(&self) -> usize {
        match self {
            Frozen::F32(w) => w.rows(),
            Frozen::Bf16(w) => w.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Frozen::F32(w) => w.cols(),
            Frozen::Bf16(w) => w.cols(),
        }
    }
    /// [`matmul`].
    pub fn matmul(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        match self {
            Frozen::F32(w) => matmul(x, m, w),
            Frozen::Bf16(w) => matmul(x, m, w),
        }
    }
    /// [`matmul_transposed`].
    pub fn matmul_transposed(&self, g: &[f32], m: usize) -> Option<Vec<f32>> {
        match self {
            Frozen::F32(w) => matmul_transposed(g, m, w),
            Frozen::Bf16(w) => matmul_transposed(g, m, w),
        }
    }
}

/// `y[m, n] = x[m, k] · W`, `x` row-major; None where the micro-kernel is not available or `x`
/// has the wrong size.
pub fn matmul<E: Element>(x: &[f32], m: usize, w: &Packed<E>) -> Option<Vec<f32>> {
    matmul_on(isa(), x, m, w)
}

/// `y[m, k] = g[m, n] · Wᵀ` (the input gradient of [`matmul`]), `g` row-major; None as for
/// [`matmul`].
pub fn matmul_transposed<E: Element>(g: &[f32], m: usize, w: &Packed<E>) -> Option<Vec<f32>> {
    if !available() || m == 0 || g.len() != m * w.n {
        return None;
    }
    matmul(g, m, w.transposed())
}

/// [`matmul`] with the given kernel; None also where this CPU does not have it. For tests and
/// `lincir bench matmul`, which times every kernel the CPU has.
pub fn matmul_on<E: Element>(isa: Isa, x: &[f32], m: usize, w: &Packed<E>) -> Option<Vec<f32>> {
    let (k, n) = (w.k, w.n);
    if !available() || m == 0 || x.len() != m * k || !Isa::supported().contains(&isa) {
        return None;
    }
    // The input is packed once, by all threads, for all of them (each used to pack all of it).
    let xp = if E::PAIRED && isa == Isa::Avx512Bf16 { PackedInput::Pairs(pack_input_pairs(x, m, k)) } else { PackedInput::F32(pack_input(x, m, k)) };
    // Not zeroed first: the first pass over the depth writes every output (`accumulate` false).
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let panels = n.div_ceil(NR);
    // Bands of whole kernel calls (two panels for AVX-512), one or more per thread.
    let step = isa.panels_per_call();
    let band = panels.div_ceil(rayon::current_num_threads().max(1)).max(1).next_multiple_of(step);
    let out = OutPtr(y.as_mut_ptr());
    (0..panels.div_ceil(band)).into_par_iter().for_each(|b| {
        let (p0, p1) = (b * band, ((b + 1) * band).min(panels));
        // SAFETY: bands cover disjoint columns of y's allocation, which outlives the loop.
        unsafe { band_product(isa, &xp, m, w, p0, p1, out) };
    });
    // SAFETY: the bands cover all n columns (k and n are not 0: `Packed::new` refuses that) and
    // the first depth block writes all m rows of each.
    unsafe { y.set_len(m * n) };
    Some(y)
}

/// `y = x · W` on this thread, with `x`'s `m` rows read in place (`ldx` floats apart) and `y`'s
/// rows written `ldy` apart: attention's per-head products, small enough to stay in the cache,
/// which the batch and the heads already spread over the threads. f32 weights only. The result is
/// that of [`matmul_on`] with the same kernel, bit for bit. None where the kernel is not on this
/// CPU or a slice is too short for the shapes.
pub fn matmul_rows_serial(isa: Isa, x: &[f32], ldx: usize, m: usize, w: &Packed<f32>, y: &mut [f32], ldy: usize) -> Option<()> {
    if !rows_fit(y.len(), m, w.n, ldy) {
        return None;
    }
    // SAFETY: just checked: y holds m rows of n floats, ldy apart, and is borrowed mutably.
    unsafe { matmul_rows_serial_into(isa, x, ldx, m, w, y.as_mut_ptr(), ldy) }
}

/// [`matmul_rows_serial`] into rows that other threads write beside (each its own columns).
///
/// # Safety
/// `y` points at `m` rows of `w.cols()` writable floats, `ldy` apart, which no other thread
/// reads or writes meanwhile.
pub unsafe fn matmul_rows_serial_into(isa: Isa, x: &[f32], ldx: usize, m: usize, w: &Packed<f32>, y: *mut f32, ldy: usize) -> Option<()> {
    let (k, n) = (w.k, w.n);
    if !available() || !rows_fit(x.len(), m, k, ldx) || ldy < n || !Isa::supported().contains(&isa) {
        return None;
    }
    let step = isa.panels_per_call();
    let panels = n.div_ceil(NR);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let wstride = kc * NR;
        let wblock = w.panels[w.offset(pc, 0)..].as_ptr();
        for p in (0..panels).step_by(step) {
            let np = step.min(panels - p);
            let c0 = p * NR;
            let cols = (np * NR).min(n - c0);
            for ir in (0..m).step_by(MR) {
                let rows = MR.min(m - ir);
                let input = InPlaceRows { first: x[ir * ldx + pc..].as_ptr(), ld: ldx };
                // SAFETY: the checks above keep every input row and column the block reads inside
                // x, the caller every output; the weight panels hold kc steps of np panels,
                // wstride apart.
                micro_in_place(isa, kc, input, wblock.add(p * wstride), wstride, np, y.add(ir * ldy + c0), ldy, pc > 0, rows, cols);
            }
        }
    }
    Some(())
}

/// Whether `rows` (at least one) rows of `width` values, `ld` apart, fit in `len`.
fn rows_fit(len: usize, rows: usize, width: usize, ld: usize) -> bool {
    rows > 0 && ld >= width && (rows - 1) * ld + width <= len
}

/// [`micro`] for f32 weights and input rows in place.
///
/// # Safety
/// As [`micro`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro_in_place(isa: Isa, kc: usize, x: InPlaceRows, w: *const f32, wstride: usize, np: usize, y: *mut f32, ldy: usize, accumulate: bool, rows: usize, cols: usize) {
    with_whole_panels(y, ldy, accumulate, rows, cols, np * NR, |y, ldy| f32_block(isa, kc, x, w, wstride, np, y, ldy, accumulate, rows))
}

/// An output shared by threads that each write only their own part of it (columns of a product,
/// (image, head) blocks of attention's context).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: each thread writes only its own part.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the Sync wrapper, not the raw field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// The input, packed for the kernel: f32 panels ([`pack_input`]) or bf16 pairs
/// ([`pack_input_pairs`]).
enum PackedInput {
    F32(Vec<f32>),
    Pairs(Vec<u32>),
}

impl PackedInput {
    /// The panel of rows `ir..ir + 6` in the depth block starting at `pc` (`kc` deep), for an
    /// input of `m_pad` rows.
    fn panel(&self, pc: usize, ir: usize, m_pad: usize, kc: usize) -> InputPanel {
        match self {
            PackedInput::F32(v) => InputPanel::F32(v[pc * m_pad + ir * kc..].as_ptr()),
            PackedInput::Pairs(v) => InputPanel::Pairs(v[pc / 2 * m_pad + ir * kc.div_ceil(2)..].as_ptr()),
        }
    }
}

/// Panels `p0..p1` (columns `16 p0..16 p1`) of the product into `y`, from the packed input `xp`.
///
/// # Safety
/// `y` points at `m * n` floats; no other thread writes these columns; `isa` is supported.
unsafe fn band_product<E: Element>(isa: Isa, xp: &PackedInput, m: usize, w: &Packed<E>, p0: usize, p1: usize, y: OutPtr) {
    let (k, n) = (w.k, w.n);
    let m_pad = m.next_multiple_of(MR);
    let step = isa.panels_per_call();
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        // Weights between one panel and the next in this block.
        let wstride = stored_depth::<E>(kc) * NR;
        let wblock = w.panels[w.offset(pc, p0 * NR)..].as_ptr();
        // Blocks of MC input rows (in L2) against every weight panel of the band (in L1).
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            for p in (p0..p1).step_by(step) {
                let np = step.min(p1 - p);
                let c0 = p * NR;
                let cols = (np * NR).min(n - c0);
                let wp = wblock.add((p - p0) * wstride);
                for ir in (ic..ic + mc).step_by(MR) {
                    let rows = MR.min(m - ir);
                    let x = xp.panel(pc, ir, m_pad, kc);
                    micro(isa, kc, x, wp, wstride, np, y.0.add(ir * n + c0), n, pc > 0, rows, cols);
                }
            }
        }
    }
}

/// The input `[m, k]` as panels of MR rows, in blocks of KC columns: block `pc` starts at
/// `pc * m_pad` (m rounded up to MR), and its panel of rows `i0..i0+MR` holds, column after
/// column, those rows contiguously (zeros past the last row). Packed in parallel by row panels.
fn pack_input(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let m_pad = m.next_multiple_of(MR);
    let mut out = vec![0f32; m_pad * k];
    let dst = OutPtr(out.as_mut_ptr());
    (0..m_pad / MR).into_par_iter().with_min_len(4).for_each(|panel| {
        let (i0, rows) = (panel * MR, MR.min(m - panel * MR));
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // SAFETY: this panel's region of each block, [pc * m_pad + i0 * kc, + kc * MR), is
            // inside `out` and written by this task alone (no other reference to it exists).
            let block = unsafe { std::slice::from_raw_parts_mut(dst.get().add(pc * m_pad + i0 * kc), kc * MR) };
            let src: [&[f32]; MR] = std::array::from_fn(|r| if r < rows { &x[(i0 + r) * k + pc..][..kc] } else { &[] });
            if rows == MR {
                // Whole panels (all but the last): fixed trip counts, no bounds checks inside.
                for (c, column) in block.chunks_exact_mut(MR).enumerate() {
                    for (r, v) in column.iter_mut().enumerate() {
                        *v = src[r][c];
                    }
                }
            } else {
                for (c, column) in block.chunks_exact_mut(MR).enumerate() {
                    for (r, v) in column[..rows].iter_mut().enumerate() {
                        *v = src[r][c];
                    }
                }
            }
        }
    });
    out
}

/// The input rounded to bf16 (to nearest even) for `vdpbf16ps`, laid out as [`pack_input`] with
/// each pair of columns `2j, 2j + 1` of a row in one 32-bit lane (column `2j` in the low half,
/// zero past an odd depth): block `pc` starts at `pc / 2 * m_pad`, a panel holds `kc / 2`
/// (rounded up) lanes per row.
fn pack_input_pairs(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    let m_pad = m.next_multiple_of(MR);
    let mut out = vec![0u32; m_pad * k.div_ceil(2)];
    let dst = OutPtr(out.as_mut_ptr() as *mut f32);
    #[cfg(target_arch = "x86_64")]
    let vector = std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f");
    (0..m_pad / MR).into_par_iter().with_min_len(4).for_each(|panel| {
        let (i0, rows) = (panel * MR, MR.min(m - panel * MR));
        for pc in (0..k).step_by(KC) {
            let pairs = KC.min(k - pc).div_ceil(2);
            // SAFETY: as in `pack_input`: this panel's region of the block, written by this task
            // alone, inside `out`.
            let block = unsafe { std::slice::from_raw_parts_mut((dst.get() as *mut u32).add(pc / 2 * m_pad + i0 * pairs), pairs * MR) };
            for r in 0..rows {
                let row = &x[(i0 + r) * k + pc..][..KC.min(k - pc)];
                #[cfg(target_arch = "x86_64")]
                if vector {
                    // SAFETY: the CPU has AVX512_BF16 (checked above).
                    unsafe { bf16_pairs_avx512(row, &mut block[r..]) };
                    continue;
                }
                bf16_pairs(row, &mut block[r..]);
            }
        }
    });
    out
}

/// `out[j * MR] = bf16(row[2j]) | bf16(row[2j + 1]) << 16`, rounded to nearest even (0 past an
/// odd length).
fn bf16_pairs(row: &[f32], out: &mut [u32]) {
    let bits = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
    for (j, two) in row.chunks(2).enumerate() {
        out[j * MR] = bits(two[0]) | two.get(1).map_or(0, |&v| bits(v) << 16);
    }
}

/// [`bf16_pairs`] 32 values at a time with `vcvtne2ps2bf16`: in memory order its 32 results
/// are the 16 pairs. The instruction rounds to nearest even as the scalar path does, except that
/// it flushes subnormal inputs to zero, which `vdpbf16ps` does with its inputs anyway. The
/// scalar conversion (a branch for NaN per value) took 15% of a bf16 image batch.
///
/// # Safety
/// The CPU has AVX512F and AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_pairs_avx512(row: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::*;
    let pairs = row.len().div_ceil(2);
    assert!(out.len() > (pairs.max(1) - 1) * MR, "the packed block holds every pair");
    let mut lanes = [0u32; 16];
    for (c, chunk) in row.chunks(32).enumerate() {
        let n = chunk.len();
        // Masked loads: zeros past the end (an odd length's last pair gets a zero high half).
        let (m0, m1) = ((1u32 << n.min(16)) - 1, ((1u64 << n.saturating_sub(16)) - 1) as u32);
        let lo = _mm512_maskz_loadu_ps(m0 as u16, chunk.as_ptr());
        let hi = _mm512_maskz_loadu_ps(m1 as u16, chunk.as_ptr().add(16.min(n)));
        _mm512_storeu_si512(lanes.as_mut_ptr() as *mut __m512i, std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
        for (j, &v) in lanes[..n.div_ceil(2)].iter().enumerate() {
            *out.get_unchecked_mut((c * 16 + j) * MR) = v;
        }
    }
}

/// One block of up to 6 x `np * 16` outputs over `kc` packed steps, written (`accumulate`
/// false) or added to: `rows x cols` of it land in `y`. Only the rows that exist are computed (a
/// query's 20 rows are three full blocks and one of two rows).
///
/// # Safety
/// `x` and `w` point at packed panels of `kc` steps (`np` weight panels, `wstride` elements
/// apart); `y` has `rows` rows of `cols` writable floats, `ldy` apart; `isa` is supported.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro<E: Element>(isa: Isa, kc: usize, x: InputPanel, w: *const E, wstride: usize, np: usize, y: *mut f32, ldy: usize, accumulate: bool, rows: usize, cols: usize) {
    with_whole_panels(y, ldy, accumulate, rows, cols, np * NR, |y, ldy| E::block(isa, kc, x, w, wstride, np, y, ldy, accumulate, rows))
}

/// Runs `block`, which writes (or adds to) `rows` x `width` outputs, on `y` itself when `cols`
/// is the whole width; else (the last columns of an output whose width is not a multiple of 16)
/// on a copy aside, of which the first `cols` columns are copied back.
///
/// # Safety
/// `y` has `rows` rows of `cols` writable floats, `ldy` apart; `width` <= 2 panels.
#[inline(always)]
unsafe fn with_whole_panels(y: *mut f32, ldy: usize, accumulate: bool, rows: usize, cols: usize, width: usize, block: impl FnOnce(*mut f32, usize)) {
    if cols == width {
        return block(y, ldy);
    }
    let mut tmp = [0f32; MR * 2 * NR];
    if accumulate {
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(y.add(r * ldy), tmp.as_mut_ptr().add(r * width), cols);
        }
    }
    block(tmp.as_mut_ptr(), width);
    for r in 0..rows {
        std::ptr::copy_nonoverlapping(tmp.as_ptr().add(r * width), y.add(r * ldy), cols);
    }
}

/// The output block is read (or written) only after the depth loop: fetch its lines first, so
/// that a large product's output, which lives beyond L2 between depth blocks, does not stall.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_output<const R: usize>(y: *mut f32, ldy: usize, cols: usize) {
    use std::arch::x86_64::*;
    for r in 0..R {
        for c in (0..cols).step_by(NR) {
            _mm_prefetch::<_MM_HINT_T0>(y.add(r * ldy + c) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(y.add(r * ldy + c + NR - 1) as *const i8);
        }
    }
}

/// R rows (of the 6 an input panel holds) x 16 columns in twelve or fewer registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_f32<const R: usize, X: InputAccess>(kc: usize, x: X, w: *const f32, y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    prefetch_output::<R>(y, ldy, NR);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for i in 0..kc {
        let (w0, w1) = (_mm256_loadu_ps(w.add(i * NR)), _mm256_loadu_ps(w.add(i * NR + 8)));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_broadcast_ss(&*x.at(i, r));
            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
        }
    }
    store_avx2::<R>(&acc, y, ldy, accumulate);
}

/// As [`avx2_f32`] for bf16 weights in pairs: one load holds two rows' weights of 8 columns;
/// the even row is the low half of each lane (shifted up), the odd row the high half (masked).
/// Each output adds its products in the order of the f32 kernel, so the result is that of the
/// widened weights, bit for bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_bf16<const R: usize>(kc: usize, x: *const f32, w: *const u32, y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    prefetch_output::<R>(y, ldy, NR);
    let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for j in 0..kc / 2 {
        // The even row, then the odd one, each widened from memory when used: twelve sums, two
        // weight vectors and an input fill the 16 registers. Holding both rows' weights at once
        // spilled a sum (8% slower), and so did letting the compiler merge the two loads (30%):
        // the second one's address is opaque to it, so that it stays a load from L1.
        let (p0, p1) = (w.add(j * NR) as *const __m256i, w.add(j * NR + 8) as *const __m256i);
        let e0 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_loadu_si256(p0)));
        let e1 = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_loadu_si256(p1)));
        for (r, a) in acc.iter_mut().enumerate() {
            let xe = _mm256_broadcast_ss(&*x.add(2 * j * MR + r));
            a[0] = _mm256_fmadd_ps(xe, e0, a[0]);
            a[1] = _mm256_fmadd_ps(xe, e1, a[1]);
        }
        let o0 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(opaque(p0)), high));
        let o1 = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(opaque(p1)), high));
        for (r, a) in acc.iter_mut().enumerate() {
            let xo = _mm256_broadcast_ss(&*x.add((2 * j + 1) * MR + r));
            a[0] = _mm256_fmadd_ps(xo, o0, a[0]);
            a[1] = _mm256_fmadd_ps(xo, o1, a[1]);
        }
    }
    if kc % 2 == 1 {
        // The last row, alone in its pair (the input has no column past it).
        let j = kc / 2;
        let v0 = _mm256_loadu_si256(w.add(j * NR) as *const __m256i);
        let v1 = _mm256_loadu_si256(w.add(j * NR + 8) as *const __m256i);
        let (e0, e1) = (_mm256_castsi256_ps(_mm256_slli_epi32::<16>(v0)), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v1)));
        for (r, a) in acc.iter_mut().enumerate() {
            let xe = _mm256_broadcast_ss(&*x.add(2 * j * MR + r));
            a[0] = _mm256_fmadd_ps(xe, e0, a[0]);
            a[1] = _mm256_fmadd_ps(xe, e1, a[1]);
        }
    }
    store_avx2::<R>(&acc, y, ldy, accumulate);
}

/// `p`, through an empty `asm!` the compiler cannot see into: loads from it are not merged with
/// earlier loads from the same address (which would keep the value in a register instead).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::pointers_in_nomem_asm_block)] // the asm reads no memory: only the address passes
fn opaque<T>(mut p: *const T) -> *const T {
    // SAFETY: an empty instruction string; the register comes back unchanged.
    unsafe { std::arch::asm!("/* {0} */", inout(reg) p, options(nomem, nostack, preserves_flags)) };
    p
}

/// Writes (or adds) R rows of 16 accumulated outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_avx2<const R: usize>(acc: &[[std::arch::x86_64::__m256; 2]; R], y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    for (r, a) in acc.iter().enumerate() {
        let yp = y.add(r * ldy);
        let (mut v0, mut v1) = (a[0], a[1]);
        if accumulate {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(yp));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(yp.add(8)));
        }
        _mm256_storeu_ps(yp, v0);
        _mm256_storeu_ps(yp.add(8), v1);
    }
}

/// R rows x P panels of 16 columns in 16-lane registers (twelve for 6 x 2): twice the columns
/// per load of an input value, and enough independent sums to keep two FMA units busy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_f32<const R: usize, const P: usize, X: InputAccess>(kc: usize, x: X, w: *const f32, wstride: usize, y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    prefetch_output::<R>(y, ldy, P * NR);
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for i in 0..kc {
        let wv: [__m512; P] = std::array::from_fn(|p| _mm512_loadu_ps(w.add(p * wstride + i * NR)));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*x.at(i, r));
            for p in 0..P {
                a[p] = _mm512_fmadd_ps(xv, wv[p], a[p]);
            }
        }
    }
    store_avx512::<R, P>(&acc, y, ldy, accumulate);
}

/// As [`avx512_f32`] for bf16 weights in pairs, widened in registers as in [`avx2_bf16`] (one
/// load: two rows of a 16-column panel); bit for bit the product of the widened weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_bf16_widened<const R: usize, const P: usize>(kc: usize, x: *const f32, w: *const u32, wstride: usize, y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    prefetch_output::<R>(y, ldy, P * NR);
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for j in 0..kc.div_ceil(2) {
        let v: [__m512i; P] = std::array::from_fn(|p| _mm512_loadu_si512(w.add(p * wstride + j * NR) as *const __m512i));
        let even: [__m512; P] = std::array::from_fn(|p| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v[p])));
        let odd: [__m512; P] = std::array::from_fn(|p| _mm512_castsi512_ps(_mm512_and_si512(v[p], high)));
        // The last row of an odd depth is alone in its pair: the input has no column past it.
        let both = 2 * j + 1 < kc;
        for (r, a) in acc.iter_mut().enumerate() {
            let xe = _mm512_set1_ps(*x.add(2 * j * MR + r));
            for p in 0..P {
                a[p] = _mm512_fmadd_ps(xe, even[p], a[p]);
            }
            if both {
                let xo = _mm512_set1_ps(*x.add((2 * j + 1) * MR + r));
                for p in 0..P {
                    a[p] = _mm512_fmadd_ps(xo, odd[p], a[p]);
                }
            }
        }
    }
    store_avx512::<R, P>(&acc, y, ldy, accumulate);
}

/// R rows x P panels with `vdpbf16ps`: each lane adds the products of a pair of bf16 inputs
/// ([`pack_input_pairs`]) and a pair of bf16 weights to an f32 sum, twice the products of an
/// f32 FMA per instruction. The input's rounding to bf16 is the only change from the widened
/// kernel's result (and the instruction's own order of the two additions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn avx512_dpbf16<const R: usize, const P: usize>(kc: usize, x: *const u32, w: *const u32, wstride: usize, y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    prefetch_output::<R>(y, ldy, P * NR);
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for j in 0..kc.div_ceil(2) {
        let wv: [__m512bh; P] = std::array::from_fn(|p| std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(w.add(p * wstride + j * NR) as *const __m512i)));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*x.add(j * MR + r) as i32));
            for p in 0..P {
                a[p] = _mm512_dpbf16_ps(a[p], xv, wv[p]);
            }
        }
    }
    store_avx512::<R, P>(&acc, y, ldy, accumulate);
}

/// Writes (or adds) R rows of P x 16 accumulated outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_avx512<const R: usize, const P: usize>(acc: &[[std::arch::x86_64::__m512; P]; R], y: *mut f32, ldy: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    for (r, a) in acc.iter().enumerate() {
        for (p, v) in a.iter().enumerate() {
            let yp = y.add(r * ldy + p * NR);
            let v = if accumulate { _mm512_add_ps(*v, _mm512_loadu_ps(yp)) } else { *v };
            _mm512_storeu_ps(yp, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector conversion to bf16 pairs writes what the scalar one does, at every length
    /// around its 32-value step, with rounding ties, infinities and NaN; subnormals become 0.
    #[test]
    fn bf16_pairs_match_the_scalar_conversion() {
        #[cfg(target_arch = "x86_64")]
        {
            if !(std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f")) {
                eprintln!("no AVX512_BF16 here: only the scalar conversion runs");
                return;
            }
            let mut rng = crate::rng::Rng::new(9);
            let specials = [f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000), f32::from_bits(0xbf80_8001), f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 65504.0, f32::MAX, 1e-30];
            for len in (0..70).chain([255, 256]) {
                let row: Vec<f32> = (0..len).map(|i| if i % 7 == 3 { specials[i % specials.len()] } else { rng.normal() * 10f32.powi(i as i32 % 9 - 4) }).collect();
                let pairs = len.div_ceil(2);
                let (mut want, mut got) = (vec![7u32; pairs * MR + 1], vec![7u32; pairs * MR + 1]);
                bf16_pairs(&row, &mut want);
                unsafe { bf16_pairs_avx512(&row, &mut got) };
                assert_eq!(want, got, "length {len}");
            }
            let subnormal = [1e-39f32, -3e-40, 1.0, f32::MIN_POSITIVE];
            let mut got = vec![0u32; 2 * MR];
            unsafe { bf16_pairs_avx512(&subnormal, &mut got) };
            assert_eq!((got[0], got[MR]), (0x8000_0000, 0x0080_3f80), "subnormals flush to signed zero");
        }
    }

    #[test]
    fn packing_round_trips() {
        // Depths that end a block on an odd row (259 = 256 + 3): bf16 pairs it with a zero row.
        for (k, n) in [(7, 37), (259, 20), (1, 1)] {
            let w: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
            let p = Packed::<f32>::new(&w, k, n).unwrap();
            assert_eq!((p.rows(), p.cols()), (k, n));
            assert_eq!(p.unpack(), w);
            let narrow: Vec<half::bf16> = (0..k * n).map(|i| half::bf16::from_f32((i % 250) as f32)).collect();
            let p = Packed::new(&narrow, k, n).unwrap();
            assert_eq!(p.unpack(), narrow);
            assert_eq!(p.panels.len(), n.div_ceil(NR) * NR * k.next_multiple_of(2));
        }
        assert!(Packed::new(&[0f32; 7 * 37], 7, 36).is_none(), "wrong size");
    }

    /// `|got - want| <= tol · (1 + |want|)` for every element.
    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what} [{i}]: {g} vs {w}");
        }
    }

    /// `x · W` in f64, `x` `[m, k]` and `w` `[k, n]` row-major.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for i in 0..k {
                for c in 0..n {
                    y[r * n + c] += x[r * k + i] as f64 * w[i * n + c] as f64;
                }
            }
        }
        y
    }

    fn transpose(w: &[f32], k: usize, n: usize) -> Vec<f32> {
        (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
    }

    /// Every kernel this CPU has (all of them under an emulated Sapphire Rapids:
    /// scripts/emulate_sapphire_rapids.sh), against f64 and against the AVX2 kernel.
    #[test]
    fn every_kernel_matches_the_plain_product_and_its_transpose_for_ragged_shapes() {
        let kernels = Isa::supported();
        if kernels.is_empty() {
            return; // nothing to compare: the general kernel is used
        }
        eprintln!("kernels tested: {:?}", kernels);
        if std::env::var_os("LINCIR_KERNEL").is_none_or(|v| v.is_empty()) {
            assert_eq!(Some(&isa()), kernels.last(), "the products use the widest kernel the CPU has");
        }
        let mut rng = crate::rng::Rng::new(3);
        // Shapes crossing every block edge: rows past MR and MC, columns past NR (and an odd
        // number of panels), depth past KC (and odd).
        for (m, k, n) in [(1, 1, 1), (7, 300, 17), (97, 259, 1041), (200, 768, 64), (13, 5, 2100), (12, 531, 40)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let g: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
            let (want_y, want_dx) = (reference(&x, &w, m, k, n), reference(&g, &transpose(&w, k, n), m, n, k));
            let packed = Packed::new(&w, k, n).unwrap();
            let avx2 = (matmul_on(Isa::Avx2, &x, m, &packed).unwrap(), matmul_on(Isa::Avx2, &g, m, packed.transposed()).unwrap());
            for &isa in kernels {
                let y = matmul_on(isa, &x, m, &packed).unwrap();
                let dx = matmul_on(isa, &g, m, packed.transposed()).unwrap();
                assert_close(&y, &want_y, 1e-4, &format!("{isa:?} x·W {m}x{k}x{n}"));
                assert_close(&dx, &want_dx, 1e-4, &format!("{isa:?} g·Wᵀ {m}x{k}x{n}"));
                // Each output is one lane summing the same products in the same order.
                assert!(y == avx2.0 && dx == avx2.1, "{isa:?} differs from the AVX2 kernel at {m}x{k}x{n}");
            }
        }
        let packed = Packed::new(&[1.0f32; 4], 2, 2).unwrap();
        assert!(matmul(&[0.0; 3], 2, &packed).is_none(), "input of the wrong size");
        assert!(matmul_transposed(&[0.0; 5], 2, &packed).is_none(), "gradient of the wrong size");
        for isa in [Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16].into_iter().filter(|i| !kernels.contains(i)) {
            assert!(matmul_on(isa, &[1.0; 2], 1, &packed).is_none(), "{isa:?} is not on this CPU: no product");
        }
    }

    /// Attention's products: weights packed from strided rows (as they are and transposed) equal
    /// `Packed::new` of the same matrix, and the in-place product equals the packed one, bit for
    /// bit, for every kernel, with input and output rows wider than the product.
    #[test]
    fn in_place_rows_products_equal_the_packed_product() {
        let mut rng = crate::rng::Rng::new(11);
        for (m, k, n, ld) in [(1, 1, 1, 3), (17, 8, 17, 40), (257, 64, 257, 270), (40, 300, 20, 333), (6, 20, 5, 20)] {
            let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let want = Packed::new(&w, k, n).unwrap();
            let strided: Vec<f32> = (0..k * ld).map(|i| if i % ld < n { w[i / ld * n + i % ld] } else { f32::NAN }).collect();
            let rows = Packed::from_rows(vec![1.0; 5], &strided, ld, k, n).unwrap();
            let wt = transpose(&w, k, n);
            let strided_t: Vec<f32> = (0..n * ld).map(|i| if i % ld < k { wt[i / ld * k + i % ld] } else { f32::NAN }).collect();
            let columns = Packed::from_transposed_rows(Vec::new(), &strided_t, ld, k, n).unwrap();
            assert!(rows.panels == want.panels && columns.panels == want.panels, "packing {k}x{n}");
            let ldx = k + 3;
            let x: Vec<f32> = (0..m * ldx).map(|i| if i % ldx < k { rng.normal() } else { f32::NAN }).collect();
            let dense: Vec<f32> = (0..m * k).map(|i| x[i / k * ldx + i % k]).collect();
            for &isa in Isa::supported() {
                let packed = matmul_on(isa, &dense, m, &want).unwrap();
                let ldy = n + 5;
                let mut y = vec![-7.0f32; m * ldy];
                matmul_rows_serial(isa, &x, ldx, m, &columns, &mut y, ldy).unwrap();
                for r in 0..m {
                    assert!(y[r * ldy..r * ldy + n] == packed[r * n..(r + 1) * n], "{isa:?} {m}x{k}x{n} row {r}");
                    assert!(y[r * ldy + n..(r + 1) * ldy].iter().all(|&v| v == -7.0), "{isa:?}: wrote past the row");
                }
                assert_close(&packed, &reference(&dense, &w, m, k, n), 1e-4, &format!("{isa:?} {m}x{k}x{n}"));
            }
        }
        let w = Packed::new(&[1.0f32; 6], 2, 3).unwrap();
        assert!(matmul_rows_serial(Isa::Avx2, &[1.0; 3], 2, 2, &w, &mut [0.0; 6], 3).is_none(), "input too short");
        assert!(matmul_rows_serial(Isa::Avx2, &[1.0; 4], 2, 2, &w, &mut [0.0; 5], 3).is_none(), "output too short");
        assert!(Packed::from_rows(Vec::new(), &[1.0; 5], 3, 2, 3).is_none(), "source too short");
        assert!(Packed::from_transposed_rows(Vec::new(), &[1.0; 6], 2, 3, 2).is_none(), "stride narrower than a row");
    }

    /// bf16 weights: widened in registers, exactly the product of the widened weights; through
    /// `vdpbf16ps`, the product of bf16-rounded inputs and the weights, to f32 rounding.
    #[test]
    fn every_kernel_multiplies_bf16_weights() {
        let mut rng = crate::rng::Rng::new(5);
        for (m, k, n) in [(20, 300, 50), (7, 259, 40), (13, 5, 33), (1, 1, 1), (100, 512, 96)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let g: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
            let w: Vec<half::bf16> = (0..k * n).map(|_| half::bf16::from_f32(rng.normal())).collect();
            let wide: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let (narrow, widened) = (Packed::new(&w, k, n).unwrap(), Packed::new(&wide, k, n).unwrap());
            for &isa in Isa::supported() {
                let y = matmul_on(isa, &x, m, &narrow).unwrap();
                let dx = matmul_on(isa, &g, m, narrow.transposed()).unwrap();
                if isa == Isa::Avx512Bf16 {
                    let round = |v: &[f32]| v.iter().map(|&a| half::bf16::from_f32(a).to_f32()).collect::<Vec<_>>();
                    // Error bound of f32 sums of k terms, relative to the sum of their magnitudes.
                    let check = |got: &[f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, what: &str| {
                        let want = reference(a, b, m, k, n);
                        let abs: Vec<f32> = a.iter().map(|v| v.abs()).collect();
                        let absb: Vec<f32> = b.iter().map(|v| v.abs()).collect();
                        let scale = reference(&abs, &absb, m, k, n);
                        for i in 0..want.len() {
                            let err = (got[i] as f64 - want[i]).abs();
                            assert!(err <= 1e-6 * k as f64 * scale[i] + 1e-30, "{what} [{i}]: {} vs {} (scale {})", got[i], want[i], scale[i]);
                        }
                    };
                    check(&y, &round(&x), &wide, m, k, n, &format!("vdpbf16ps x·W {m}x{k}x{n}"));
                    check(&dx, &round(&g), &transpose(&wide, k, n), m, n, k, &format!("vdpbf16ps g·Wᵀ {m}x{k}x{n}"));
                } else {
                    assert!(y == matmul_on(isa, &x, m, &widened).unwrap(), "{isa:?} bf16 x·W {m}x{k}x{n}");
                    assert!(dx == matmul_on(isa, &g, m, widened.transposed()).unwrap(), "{isa:?} bf16 g·Wᵀ {m}x{k}x{n}");
                }
            }
        }
    }
}
