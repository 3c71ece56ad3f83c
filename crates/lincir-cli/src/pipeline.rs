//! `--preprocess`: which published image transform turns images into pixels (eval, submit,
//! embed), so that each method can be evaluated as its authors evaluated it
//! (docs/PREPROCESSING.md, "Other methods' transforms").

use clap::{Args, ValueEnum};
use lincir::clip::preprocess::Pipeline;
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
