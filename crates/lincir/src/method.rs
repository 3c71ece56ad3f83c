//! How each zero-shot CIR method builds its composed query from a pseudo word and a text, as its
//! published code does (sources in docs/PEERS.md): the template, the placeholder token, which
//! placeholder positions take the pseudo word, and FashionIQ's two captions.

use crate::mapper::Architecture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// LinCIR (navervision/lincir): `a photo of $ that {text}`, every `$` (id 259) replaced.
    Lincir,
    /// SEARLE (miccunifi/SEARLE): the same template, only the first `$` of a sentence replaced.
    Searle,
    /// Pic2Word (google-research/composed_image_retrieval): `a photo of * , {text}`, the first
    /// `*` (id 265) replaced.
    #[serde(rename = "pic2word")]
    Pic2Word,
}

/// CLIP BPE ids of the two placeholders (`$</w>`, `*</w>`).
pub const DOLLAR_ID: u32 = 259;
pub const STAR_ID: u32 = 265;

impl Method {
    pub const ALL: [Method; 3] = [Method::Lincir, Method::Searle, Method::Pic2Word];

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "lincir" => Some(Method::Lincir),
            "searle" => Some(Method::Searle),
            "pic2word" => Some(Method::Pic2Word),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Lincir => "lincir",
            Method::Searle => "searle",
            Method::Pic2Word => "pic2word",
        }
    }

    /// The method a checkpoint's architecture implies when the user names none (SEARLE's phi has
    /// LinCIR's architecture: it must be named).
    pub fn default_for(arch: Architecture) -> Self {
        match arch {
            Architecture::Phi => Method::Lincir,
            Architecture::Im2Text => Method::Pic2Word,
        }
    }

    /// Whether the method's published code uses this architecture.
    pub fn uses(self, arch: Architecture) -> bool {
        matches!((self, arch), (Method::Lincir | Method::Searle, Architecture::Phi) | (Method::Pic2Word, Architecture::Im2Text))
    }

    /// The image transform the method's authors evaluated with (their evaluation scripts'
    /// defaults: docs/PREPROCESSING.md, "Other methods' transforms").
    pub fn evaluation_pipeline(self) -> crate::clip::preprocess::Pipeline {
        use crate::clip::preprocess::Pipeline;
        match self {
            Method::Lincir => Pipeline::Transformers,
            Method::Searle => Pipeline::TargetPad,
            Method::Pic2Word => Pipeline::OpenAi,
        }
    }

    /// The evaluation template (`{}` is the modification text).
    pub fn template(self) -> &'static str {
        match self {
            Method::Lincir | Method::Searle => "a photo of $ that {}",
            Method::Pic2Word => "a photo of * , {}",
        }
    }

    /// The placeholder word and its token id.
    pub fn placeholder(self) -> (&'static str, u32) {
        match self {
            Method::Lincir | Method::Searle => ("$", DOLLAR_ID),
            Method::Pic2Word => ("*", STAR_ID),
        }
    }

    /// Every placeholder position takes the pseudo word (LinCIR), or only the first one of each
    /// sentence (SEARLE's `encode_with_pseudo_tokens`; Pic2Word's `encode_text_img_retrieval`,
    /// which takes the first `*` of the batch's first row: the same position for its templates).
    pub fn replaces_every_placeholder(self) -> bool {
        self == Method::Lincir
    }

    /// The query sentence for a modification text.
    pub fn query(self, text: &str) -> String {
        self.template().replace("{}", text)
    }

    /// FashionIQ's texts for one query's two captions: LinCIR and SEARLE strip `.?, ` from both
    /// ends of each caption and encode both orders (`c0 and c1`, `c1 and c0`; the normalised
    /// features are averaged); Pic2Word encodes `c1 and c0` once, unstripped.
    pub fn fashioniq_texts(self, c0: &str, c1: &str) -> Vec<String> {
        match self {
            Method::Lincir | Method::Searle => {
                let (a, b) = (crate::bench::fashioniq::clean_caption(c0), crate::bench::fashioniq::clean_caption(c1));
                vec![format!("{a} and {b}"), format!("{b} and {a}")]
            }
            Method::Pic2Word => vec![format!("{c1} and {c0}")],
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_placeholders_follow_the_published_code() {
        assert_eq!(Method::Lincir.query("is red"), "a photo of $ that is red");
        assert_eq!(Method::Searle.query("is red"), "a photo of $ that is red");
        assert_eq!(Method::Pic2Word.query("is red"), "a photo of * , is red");
        assert_eq!(Method::Pic2Word.placeholder(), ("*", 265));
        assert_eq!(Method::Lincir.fashioniq_texts(" is red.", "has long sleeves?"), ["is red and has long sleeves", "has long sleeves and is red"]);
        assert_eq!(Method::Pic2Word.fashioniq_texts(" is red.", "has long sleeves?"), ["has long sleeves? and  is red."]);
        assert_eq!(Method::parse("SEARLE"), Some(Method::Searle));
        assert!(Method::parse("clip").is_none());
        assert!(Method::Searle.uses(Architecture::Phi) && !Method::Searle.uses(Architecture::Im2Text));
    }
}
