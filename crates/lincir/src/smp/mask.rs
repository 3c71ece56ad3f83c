//! Step 3 of SMP: replacing a caption's keywords by the placeholder.

use crate::prompt::PLACEHOLDER;

/// A masked caption and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    pub text: String,
    /// True when a random word was masked instead of (all) the keywords.
    pub fallback: bool,
}

/// For each keyword in order: if it is non-empty and occurs in `caption`, replace every
/// occurrence of it in the masked text by the placeholder (plain substring replacement, which can
/// hit inside other words: that is the method). Otherwise replace one word of the caption (split
/// on single spaces, as Python's `split(" ")`), chosen by `pick(word_count)`, and stop. A caption
/// without keywords takes that second branch.
pub fn mask_caption(caption: &str, keywords: &[String], pick: &mut dyn FnMut(usize) -> usize) -> Masked {
    let mut masked = caption.to_string();
    let random_word = |masked: &str, pick: &mut dyn FnMut(usize) -> usize| {
        let words: Vec<&str> = caption.split(' ').collect();
        let word = words[pick(words.len()).min(words.len() - 1)];
        Masked { text: masked.replace(word, PLACEHOLDER), fallback: true }
    };
    if keywords.is_empty() {
        return random_word(&masked, pick);
    }
    for k in keywords {
        if k.is_empty() || !caption.contains(k.as_str()) {
            return random_word(&masked, pick);
        }
        masked = masked.replace(k.as_str(), PLACEHOLDER);
    }
    Masked { text: masked, fallback: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keywords_are_replaced_everywhere_even_inside_words() {
        let m = mask_caption("a cat on a concatenated cat", &kw(&["cat"]), &mut |_| unreachable!());
        assert_eq!(m, Masked { text: "a [$] on a con[$]enated [$]".into(), fallback: false });
    }

    #[test]
    fn an_absent_keyword_masks_a_random_word_and_stops() {
        let m = mask_caption("a dog runs fast", &kw(&["a dog", "horse", "fast"]), &mut |n| {
            assert_eq!(n, 4);
            2
        });
        // "a dog" was already replaced; then "horse" is absent: "runs" is masked; "fast" is not.
        assert_eq!(m, Masked { text: "[$] [$] fast".into(), fallback: true });
    }

    #[test]
    fn no_keywords_masks_a_random_word() {
        let m = mask_caption("is red", &[], &mut |_| 1);
        assert_eq!(m.text, "is [$]");
        assert!(m.fallback);
    }
}
