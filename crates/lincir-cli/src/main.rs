//! The `lincir` command line: parse, build library objects, call the library, print.
//! Exit codes: 0 success, 1 runtime failure, 2 usage error.

mod allocator;
mod bench;
mod bench_matmul;
mod compute;
mod convert;
mod embed;
mod eval;
mod evaluator;
mod image_training;
mod index;
mod keywords;
mod pipeline;
mod progress;
mod search;
mod serve;
mod submit;
mod train;
mod train_pic2word;
mod train_searle;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lincir", version, about = "LinCIR: zero-shot composed image retrieval with a language-only trained phi")]
struct Cli {
    /// Worker threads for the tensor library and image decoding (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Refuse images that declare more pixels than this, before decoding (Pillow's
    /// decompression-bomb limit by default; images above half of it decode with a warning).
    #[arg(long, global = true, default_value_t = lincir::clip::image_limits::DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    max_image_pixels: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train phi on captions alone (self-masking projection).
    Train(train::TrainArgs),
    /// Train Pic2Word's mapping network on unlabelled images (to compare with LinCIR).
    TrainPic2word(train_pic2word::TrainPic2WordArgs),
    /// Train SEARLE's phi on unlabelled images (textual inversion, then distillation; to compare with LinCIR).
    TrainSearle(train_searle::TrainSearleArgs),
    /// Zero-shot composed retrieval metrics on a benchmark.
    Eval(eval::EvalArgs),
    /// Write the files the CIRR and CIRCO test servers accept.
    Submit(submit::SubmitArgs),
    /// Embed a folder of images into an index (incremental: only new and changed images).
    Index(index::IndexArgs),
    /// Search an index with a reference image and/or a text.
    Search(search::SearchArgs),
    /// Serve an HTTP API and a web page for composed search over an index.
    Serve(serve::ServeArgs),
    /// Print the keywords and masked form of captions (JSON lines), as training sees them.
    Keywords(keywords::KeywordsArgs),
    /// Convert a phi checkpoint between safetensors and the official .pt format.
    ConvertPhi(convert::ConvertArgs),
    /// Embed texts (one per line) or images with CLIP into a safetensors file.
    Embed(embed::EmbedArgs),
    /// Measure throughput on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle reads RAYON_NUM_THREADS for its own kernels; rayon's global pool serves the rest.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    lincir::clip::image_limits::set_max_pixels(cli.max_image_pixels);
    if !matches!(cli.command, Command::Serve(_)) {
        allocator::keep_freed_memory();
    }
    // LINCIR_BLAS names an optional BLAS for the frozen products (clip/blas.rs).
    if let Err(e) = lincir::clip::blas::configure(None) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Train(args) => train::run(args),
        Command::TrainPic2word(args) => train_pic2word::run(args),
        Command::TrainSearle(args) => train_searle::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Index(args) => index::run(args),
        Command::Search(args) => search::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Keywords(args) => keywords::run(args),
        Command::ConvertPhi(args) => convert::run(args),
    };
    if let Err(e) = result {
        let message = format!("{e:#}");
        eprintln!("error: {message}{}", out_of_memory_hint(&message));
        std::process::exit(1);
    }
}

/// What to do when the GPU ran out of memory (the driver's and cuBLAS's own words say only that
/// it did).
fn out_of_memory_hint(message: &str) -> &'static str {
    if ["CUDA_ERROR_OUT_OF_MEMORY", "CUBLAS_STATUS_ALLOC_FAILED"].iter().any(|m| message.contains(m)) {
        " (the GPU's memory is full: a smaller --batch-size needs less, and so does --dtype bf16 where the run is f32)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gpu_out_of_memory_error_says_what_to_change() {
        let cuda = r#"DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")"#;
        assert!(super::out_of_memory_hint(cuda).contains("--batch-size"));
        assert!(super::out_of_memory_hint("cublas: CUBLAS_STATUS_ALLOC_FAILED").contains("--batch-size"));
        assert_eq!(super::out_of_memory_hint("captions.txt: no such file or directory"), "");
    }
}
