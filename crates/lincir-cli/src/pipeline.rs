//! `--preprocess`: which published image transform turns images into pixels (eval, submit,
//! embed), so that each method can be evaluated as its authors evaluated it
//! (docs/PREPROCESSING.md, "Other methods' transforms"); `--jpeg-decode`: whether large JPEGs
//! are decoded at a reduced size (index, embed).

use clap::{Args, ValueEnum};
use lincir::clip::preprocess::{JpegDecode, Pipeline};
use lincir::method::Method;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PipelineArg {
    /// transformers' CLIPImageProcessor with the model's preprocessor_config.json (LinCIR's).
    Transformers,
    /// OpenAI CLIP's torchvision transform (Pic2Word's; SEARLE's `--preprocess-type clip`).
    Openai,
    /// SEARLE's default: images more elongated than 1.25:1 padded with black to that ratio,
    /// then OpenAI CLIP's transform.
    Targetpad,
}

impl PipelineArg {
    pub fn pipeline(self) -> Pipeline {
        match self {
            PipelineArg::Transformers => Pipeline::Transformers,
            PipelineArg::Openai => Pipeline::OpenAi,
            PipelineArg::Targetpad => Pipeline::TargetPad,
        }
    }
}

#[derive(Args)]
pub struct PipelineArgs {
    /// How images become the vision tower's pixels: `transformers` (the default, LinCIR's),
    /// `openai` (Pic2Word's) or `targetpad` (SEARLE's).
    #[arg(long, value_enum, default_value = "transformers")]
    pub preprocess: PipelineArg,
    /// How JPEG files are decoded: `exact` (every pixel, as Pillow: the default) or `fast` (a
    /// large JPEG decoded at 1/2 to 1/8 of its size inside libjpeg's inverse DCT, keeping at
    /// least 3 times the tower's input size; slightly different pixels, phone photos several
    /// times faster).
    #[arg(long, value_enum, default_value = "exact")]
    pub jpeg_decode: JpegDecodeArg,
}

impl PipelineArgs {
    /// The preprocessing of `clip` these flags ask for.
    pub fn apply(&self, clip: &mut lincir::clip::Clip) -> anyhow::Result<()> {
        clip.preprocess = clip.preprocess.with_pipeline(self.preprocess.pipeline(), clip.config.vision.image_size);
        clip.preprocess.jpeg = self.jpeg_decode.decode(self.preprocess.pipeline())?;
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JpegDecodeArg {
    /// Every pixel, as Pillow and transformers' processor.
    Exact,
    /// Large JPEGs at a reduced size, resized as Pillow's draft + resize.
    Fast,
}

impl JpegDecodeArg {
    /// The decoding for images preprocessed by `pipeline`: SEARLE's pad is measured in the
    /// full image's pixels, so it has no fast decoding.
    pub fn decode(self, pipeline: Pipeline) -> anyhow::Result<JpegDecode> {
        match self {
            JpegDecodeArg::Exact => Ok(JpegDecode::Exact),
            JpegDecodeArg::Fast if pipeline == Pipeline::TargetPad => {
                anyhow::bail!("--jpeg-decode fast does not apply to --preprocess targetpad (its padding is measured on the full image)")
            }
            JpegDecodeArg::Fast => Ok(JpegDecode::Fast),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodsPipelineArg {
    /// Every method through transformers' CLIPImageProcessor: one gallery, equal terms.
    Transformers,
    /// Every method through OpenAI CLIP's torchvision transform.
    Openai,
    /// Every method through SEARLE's target pad.
    Targetpad,
    /// Each method through the transform its authors evaluated with (LinCIR transformers,
    /// SEARLE targetpad, Pic2Word openai; baselines transformers): their published setting,
    /// at the cost of one gallery embedding per transform.
    Method,
}

#[derive(Args)]
pub struct MethodsPipelineArgs {
    /// How images become the vision tower's pixels: `transformers` (the default: every method on
    /// one gallery), `openai` (Pic2Word's), `targetpad` (SEARLE's), or `method`: each method as its
    /// authors evaluated it. The feature cache keeps each transform's gallery apart.
    #[arg(long, value_enum, default_value = "transformers")]
    pub preprocess: MethodsPipelineArg,
}

impl MethodsPipelineArgs {
    /// The transform the run of `method` uses (`None`: a baseline).
    pub fn pipeline_for(&self, method: Option<Method>) -> Pipeline {
        match self.preprocess {
            MethodsPipelineArg::Transformers => Pipeline::Transformers,
            MethodsPipelineArg::Openai => Pipeline::OpenAi,
            MethodsPipelineArg::Targetpad => Pipeline::TargetPad,
            MethodsPipelineArg::Method => method.map_or(Pipeline::Transformers, Method::evaluation_pipeline),
        }
    }
}
