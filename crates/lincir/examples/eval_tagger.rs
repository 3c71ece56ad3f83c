//! Measures agreement of lincir's tokenizer + tagger + keywords with spaCy reference labels.
//!
//!     cargo run --release -p lincir --example eval_tagger -- HELDOUT.jsonl [--weights FILE]
//!
//! HELDOUT.jsonl: `{"src"?, "caption", "words", "tags", "keywords"}` per line, from
//! `scripts/make_tagger_data.py` (held-out text, never trained on). Prints, per source and
//! overall: tokenizer agreement (captions whose token sequence equals spaCy's), token-level
//! keyword/non-keyword agreement, identical keyword lists, UPOS accuracy, and speed.
//!
//! Token alignment: tokens are compared by character span. A spaCy token counts as agreeing
//! when we produced a token with exactly the same span and the same keyword status; a spaCy
//! token we split differently counts as a disagreement. The denominator is spaCy's tokens.

use lincir::smp::keywords::keywords_with;
use lincir::smp::tagger::{Tagger, Upos};
use lincir::smp::words::{find_spans, split_spans};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::time::Instant;

#[derive(Default)]
struct Stats {
    captions: usize,
    same_tokens: usize,
    same_keywords: usize,
    ref_tokens: usize,
    agree_tokens: usize,
    aligned: usize,
    same_upos: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.captions += o.captions;
        self.same_tokens += o.same_tokens;
        self.same_keywords += o.same_keywords;
        self.ref_tokens += o.ref_tokens;
        self.agree_tokens += o.agree_tokens;
        self.aligned += o.aligned;
        self.same_upos += o.same_upos;
    }
    fn print(&self, name: &str) {
        let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
        println!(
            "{name:<12} captions {:>6}  tokens {:>7}  tokenizer {:>6.2}%  token keyword agreement {:>6.2}%  identical keyword lists {:>6.2}%  UPOS {:>6.2}%",
            self.captions,
            self.ref_tokens,
            pct(self.same_tokens, self.captions),
            pct(self.agree_tokens, self.ref_tokens),
            pct(self.same_keywords, self.captions),
            pct(self.same_upos, self.aligned),
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: eval_tagger HELDOUT.jsonl [--weights FILE]");
    let mut owned = None;
    while let Some(a) = args.next() {
        if a == "--weights" {
            let bytes = std::fs::read(args.next().expect("--weights FILE")).expect("read weights");
            owned = Some(Tagger::from_bytes(&bytes).expect("parse weights"));
        }
    }
    let tagger: &Tagger = owned.as_ref().unwrap_or_else(|| Tagger::builtin());
    let file = std::fs::File::open(&path).expect("open held-out file");
    let mut by_src: BTreeMap<String, Stats> = BTreeMap::new();
    let mut words_done = 0usize;
    let mut busy = 0f64;
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let strs = |k: &str| -> Vec<String> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        };
        let caption = v["caption"].as_str().unwrap_or_default();
        let (words, tags, want_kw) = (strs("words"), strs("tags"), strs("keywords"));
        let src = v["src"].as_str().unwrap_or("all").to_string();

        let t0 = Instant::now();
        let spans = split_spans(caption);
        let ours: Vec<&str> = spans.iter().map(|&(a, b)| &caption[a..b]).collect();
        let our_tags = tagger.tag(&ours);
        busy += t0.elapsed().as_secs_f64();
        words_done += ours.len();

        let mut s = Stats {
            captions: 1,
            ref_tokens: words.len(),
            ..Default::default()
        };
        s.same_tokens = usize::from(ours.iter().eq(words.iter()));
        s.same_keywords = usize::from(keywords_with(tagger, caption) == want_kw);
        let index: HashMap<(usize, usize), usize> =
            spans.iter().enumerate().map(|(i, &sp)| (sp, i)).collect();
        for (j, span) in find_spans(caption, &words).into_iter().enumerate() {
            let Some(&i) = span.and_then(|sp| index.get(&sp)) else {
                continue;
            };
            let Some(want) = tags.get(j).and_then(|t| Upos::from_name(t)) else {
                continue;
            };
            s.aligned += 1;
            s.same_upos += usize::from(our_tags[i] == want);
            s.agree_tokens += usize::from(our_tags[i].is_keyword() == want.is_keyword());
        }
        by_src.entry(src).or_default().add(&s);
    }
    let mut all = Stats::default();
    for (src, s) in &by_src {
        s.print(src);
        all.add(s);
    }
    all.print("overall");
    println!(
        "speed: {:.0} words/s (tokenize + tag, one thread)",
        words_done as f64 / busy.max(1e-9)
    );
}
