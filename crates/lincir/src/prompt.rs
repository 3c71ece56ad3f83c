//! The pseudo-word conventions of LinCIR, in one place.

/// Id of the BPE token `$</w>`: the word `$` on its own. Every position holding this id gets the
/// pseudo word (LinCIR spec, "Tokenizer"; the official code maps its `[$]` token to it).
pub const PSEUDO_TOKEN_ID: u32 = 259;

/// The placeholder written into text where the pseudo word goes.
pub const PSEUDO_WORD: &str = "$";

/// CLIP's context length: start token + 75 BPE tokens + end token.
pub const CONTEXT_LENGTH: usize = 77;

/// CLIP's start-of-text and end-of-text ids (the end id is the largest id of the vocabulary, which
/// is why pooling at the argmax of the ids finds it).
pub const START_OF_TEXT_ID: u32 = 49406;
pub const END_OF_TEXT_ID: u32 = 49407;

/// The placeholder that masking writes into a caption where the pseudo word goes. It is one token
/// whatever surrounds it (the official code adds it as a special token and maps it to 259).
pub const PLACEHOLDER: &str = "[$]";

/// The masked caption used when masking left no placeholder (LinCIR spec, SMP step 4).
pub const FALLBACK_MASKED: &str = "a photo of [$]";

/// The query template of the paper's zero-shot evaluation.
pub const QUERY_TEMPLATE: &str = "a photo of $ that {}";

/// Fills the query template with a modification text.
pub fn composed_query(text: &str) -> String {
    QUERY_TEMPLATE.replace("{}", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_query_fills_the_template() {
        assert_eq!(composed_query("is red"), "a photo of $ that is red");
    }
}
