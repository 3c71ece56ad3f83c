//! Third-party parsers (image decoders, the Parquet reader) that panic on malformed files must
//! not take the process down: [`catch_panic`] turns such a panic into an error for that file,
//! without the panic message on stderr (the caller reports one clear error line instead).

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Runs `f`; a panic inside it becomes `Err(message)`. Panics elsewhere are reported as usual.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = GUARDED.with(|g| g.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    outcome.map_err(|payload| {
        payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_becomes_an_error_and_values_pass_through() {
        assert_eq!(super::catch_panic(|| 7), Ok(7));
        let e = super::catch_panic(|| -> u8 { panic!("bad header {}", 3) }).unwrap_err();
        assert_eq!(e, "bad header 3");
    }
}
