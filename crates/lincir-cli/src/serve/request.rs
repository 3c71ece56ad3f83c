//! The body of `POST /api/search`, read into a query: multipart or JSON, with every limit that
//! does not need the index (sizes, field names, k). Kept apart from the server so that the fuzz
//! target `fuzz/fuzz_targets/request.rs` runs exactly this code.

use axum::extract::Multipart;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// The most results one request may ask for.
pub const MAX_K: usize = 200;

/// An API error: a status and a message, sent as JSON.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

pub fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

#[derive(Deserialize, Default)]
struct JsonQuery {
    id: Option<usize>,
    text: Option<String>,
    k: Option<usize>,
    method: Option<String>,
    folder: Option<String>,
    taken_from: Option<String>,
    taken_to: Option<String>,
    #[serde(default)]
    keep_reference: bool,
}

/// The reference of a request as it arrived: an upload is decoded later, in the pool.
pub enum RefInput {
    Upload { name: String, bytes: axum::body::Bytes },
    Indexed(usize),
}

/// The query of a request, before the (blocking) work.
pub struct Parsed {
    pub reference: Option<RefInput>,
    pub text: Option<String>,
    pub k: usize,
    pub method: Option<String>,
    /// Only images in this folder of the indexed one.
    pub folder: Option<String>,
    /// Only photos taken within these dates.
    pub taken_from: Option<String>,
    pub taken_to: Option<String>,
    /// Whether an indexed reference may be among the results.
    pub keep_reference: bool,
}

/// Reads a request body of the given content type; nothing is decoded yet.
pub async fn parse_request(content_type: &str, body: axum::body::Body, max_upload: usize) -> Result<Parsed, ApiError> {
    let parsed = if content_type.starts_with("multipart/form-data") {
        let request = axum::http::Request::builder().header(header::CONTENT_TYPE, content_type).body(body).map_err(|e| bad(e.to_string()))?;
        let form = <Multipart as axum::extract::FromRequest<()>>::from_request(request, &()).await.map_err(|e| bad(e.body_text()))?;
        parse_multipart(max_upload, form).await?
    } else if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(body, max_upload + 64 * 1024)
            .await
            .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large".into()))?;
        let q: JsonQuery = serde_json::from_slice(&bytes).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        Parsed { reference: q.id.map(RefInput::Indexed), text: q.text, k: q.k.unwrap_or(10), method: q.method, folder: q.folder, taken_from: q.taken_from, taken_to: q.taken_to, keep_reference: q.keep_reference }
    } else {
        return Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data or application/json".into()));
    };
    if parsed.k == 0 || parsed.k > MAX_K {
        return Err(bad(format!("k must be between 1 and {MAX_K}")));
    }
    Ok(parsed)
}

async fn parse_multipart(max_upload: usize, mut form: Multipart) -> Result<Parsed, ApiError> {
    let (mut image, mut id, mut text, mut k, mut method, mut folder) = (None, None, None, None, None, None);
    let (mut taken_from, mut taken_to) = (None, None);
    let mut keep_reference = false;
    while let Some(field) = form.next_field().await.map_err(|e| multipart_error(e, max_upload))? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" => {
                let file = field.file_name().unwrap_or("upload").to_string();
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, max_upload))?;
                if bytes.is_empty() {
                    continue;
                }
                if bytes.len() > max_upload {
                    return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the image is larger than {} bytes", max_upload)));
                }
                image = Some((file, bytes));
            }
            "id" | "text" | "k" | "method" | "folder" | "taken_from" | "taken_to" | "keep_reference" => {
                let v = field.text().await.map_err(|e| multipart_error(e, max_upload))?;
                match name.as_str() {
                    "id" if !v.trim().is_empty() => id = Some(v.trim().parse::<usize>().map_err(|_| bad(format!("`{v}` is not an image id")))?),
                    "text" => text = Some(v),
                    "method" if !v.trim().is_empty() => method = Some(v.trim().to_string()),
                    "k" if !v.trim().is_empty() => k = Some(v.trim().parse::<usize>().map_err(|_| bad(format!("`{v}` is not a number")))?),
                    "folder" if !v.trim().is_empty() => folder = Some(v),
                    "taken_from" if !v.trim().is_empty() => taken_from = Some(v),
                    "taken_to" if !v.trim().is_empty() => taken_to = Some(v),
                    "keep_reference" => {
                        keep_reference = match v.trim() {
                            "true" | "1" | "on" => true,
                            "false" | "0" | "off" | "" => false,
                            _ => return Err(bad(format!("keep_reference is true or false, not `{v}`"))),
                        }
                    }
                    _ => {}
                }
            }
            other => return Err(bad(format!("unknown form field `{other}` (expected image, id, text, k, method, folder, taken_from, taken_to, keep_reference)"))),
        }
    }
    let reference = match (image, id) {
        (Some(_), Some(_)) => return Err(bad("give either an uploaded image or an id, not both")),
        (Some((name, bytes)), None) => Some(RefInput::Upload { name, bytes }),
        (None, Some(id)) => Some(RefInput::Indexed(id)),
        (None, None) => None,
    };
    Ok(Parsed { reference, text, k: k.unwrap_or(10), method, folder, taken_from, taken_to, keep_reference })
}

fn multipart_error(e: axum::extract::multipart::MultipartError, max: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the upload is larger than {max} bytes"))
    } else {
        bad(format!("malformed form: {}", e.body_text()))
    }
}
