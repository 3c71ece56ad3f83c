//! `lincir convert-phi`: between lincir's safetensors and the official PyTorch `.pt` format.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lincir::phi::Phi;

#[derive(Args)]
pub struct ConvertArgs {
    /// phi checkpoint to read (lincir safetensors or official .pt; a file or `owner/repo/file` on the hub).
    #[arg(long)]
    phi: String,
    /// Output: `.pt` writes the official format, anything else lincir's safetensors.
    #[arg(long)]
    out: PathBuf,
    /// The `epoch` entry of an official checkpoint.
    #[arg(long, default_value_t = 0)]
    epoch: usize,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let phi = Phi::load(&Phi::resolve(&args.phi)?, &candle_core::Device::Cpu)?;
    let official = args.out.extension().is_some_and(|e| e == "pt" || e == "pth");
    if official {
        phi.save_official(&args.out, args.epoch)?;
    } else {
        phi.save(&args.out, &[])?;
    }
    let c = phi.config;
    println!(
        "phi {} -> {} -> {} ({} parameters) written to {} ({})",
        c.input_dim,
        c.hidden_dim,
        c.output_dim,
        c.parameter_count(),
        args.out.display(),
        if official { "official .pt" } else { "safetensors" }
    );
    Ok(())
}
