//! Step 1 of SMP: cleaning a raw caption before tagging and masking.

/// Missing -> empty; `<PERSON>` -> `person` (CC3M's anonymisation tag); lower-case; delete every
/// `$` (it would collide with the pseudo word); strip surrounding whitespace.
pub fn clean_caption(raw: Option<&str>) -> String {
    let Some(raw) = raw else { return String::new() };
    raw.replace("<PERSON>", "person").to_lowercase().replace('$', "").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_as_specified() {
        assert_eq!(clean_caption(None), "");
        assert_eq!(clean_caption(Some("  <PERSON> Buys a $5 Hat\n")), "person buys a 5 hat");
        assert_eq!(clean_caption(Some("$$ $")), "");
    }
}
