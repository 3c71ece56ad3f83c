//! The body of `POST /api/search` (multipart or JSON) as `lincir serve` reads it, before any
//! decoding. The server's own module is compiled in: the binary crate has no library to link.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/lincir-cli/src/serve/request.rs"]
#[allow(dead_code)]
mod request;

/// A small upload limit, so that the fuzzer reaches it.
const MAX_UPLOAD: usize = 4096;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the content type, so that most inputs reach a parser.
    let Some((&kind, body)) = data.split_first() else { return };
    let content_type = match kind % 4 {
        0 => "multipart/form-data; boundary=X".to_string(),
        1 => "application/json".to_string(),
        2 => format!("multipart/form-data; boundary={}", String::from_utf8_lossy(&body[..body.len().min(8)])),
        _ => String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned(),
    };
    let body = axum::body::Body::from(body.to_vec());
    RUNTIME.with(|rt| {
        if let Ok(parsed) = rt.block_on(request::parse_request(&content_type, body, MAX_UPLOAD)) {
            assert!((1..=request::MAX_K).contains(&parsed.k));
            if let Some(request::RefInput::Upload { bytes, .. }) = &parsed.reference {
                assert!(!bytes.is_empty() && bytes.len() <= MAX_UPLOAD);
            }
        }
    });
});
