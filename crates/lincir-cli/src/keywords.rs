//! `lincir keywords`: the keywords and the masked caption SMP trains on, one JSON line per caption.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lincir::rng::Rng;
use lincir::smp::{clean::clean_caption, mask::mask_caption};

#[derive(Args)]
pub struct KeywordsArgs {
    /// Captions, one per line ("-" reads standard input).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Captions given on the command line.
    texts: Vec<String>,
    /// Seed of the random-word fallback (caption i uses the stream (seed, i)).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: KeywordsArgs) -> Result<()> {
    let mut captions = args.texts.clone();
    match args.file.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            for line in std::io::stdin().lock().lines() {
                captions.push(line.context("cannot read standard input")?);
            }
        }
        Some(p) => captions.extend(lincir::embed::read_text_lines(p)?),
        None => {}
    }
    if captions.is_empty() {
        bail!("no captions: give them as arguments or with --file");
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    for (i, raw) in captions.iter().enumerate() {
        let caption = clean_caption(Some(raw));
        let keywords = lincir::smp::keywords::keywords(&caption);
        let mut rng = Rng::derive(args.seed, 1, i as u64);
        let masked = if caption.is_empty() { None } else { Some(mask_caption(&caption, &keywords, &mut |n| rng.below(n)).text) };
        let line = serde_json::json!({"caption": caption, "keywords": keywords, "masked": masked});
        writeln!(out, "{line}")?;
    }
    Ok(())
}
