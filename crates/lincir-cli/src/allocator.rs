//! Keeping freed tensor memory for reuse in the batch commands.
//!
//! A CLIP forward pass allocates and frees buffers of tens to hundreds of megabytes per layer.
//! glibc serves each from a fresh `mmap` and returns it on free, so the kernel zero-fills every
//! page again on first touch: `perf` showed about 15% of `lincir bench encode` (ViT-L/14 images)
//! in page faults and `clear_page`. Serving large blocks from the heap and not trimming it keeps
//! those pages mapped and reused. The cost is that the process keeps its high-water mark of
//! memory until it exits, which suits a batch job (`embed`, `index`, `eval`, `train`, `bench`)
//! but not a long-running server: `serve` keeps glibc's defaults.

/// Switches glibc's allocator to reuse large blocks (Linux with glibc; elsewhere nothing).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any large allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
