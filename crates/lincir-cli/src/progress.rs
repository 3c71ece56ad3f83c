//! Progress bars (indicatif) for long commands; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}

/// A count without a known total (shown from its first increment).
pub fn counter(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{msg:>8} [{elapsed_precise}] {pos} ({per_sec})").expect("valid template"));
    pb.set_message(what.to_string());
    pb
}

/// One bar at a time for the galleries a library call embeds (its progress callback).
#[derive(Default)]
pub struct Bars(std::sync::Mutex<Option<ProgressBar>>);

impl Bars {
    pub fn drive(&self, p: lincir::bench::eval::Progress) {
        use lincir::bench::eval::Progress;
        let mut bar = self.0.lock().expect("progress lock");
        match p {
            Progress::Start { what, total } => *bar = Some(self::bar(total, what)),
            Progress::Advance(n) => {
                if let Some(b) = bar.as_ref() {
                    b.inc(n as u64)
                }
            }
            Progress::Done => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear()
                }
            }
        }
    }
}
