//! Helpers shared by the CLI tests.
#![allow(dead_code)]

pub mod memory;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lincir/tests/fixtures")
}

/// Runs the binary offline, with the feature cache in a folder of the build (never the user's).
pub fn lincir(args: &[&str]) -> Output {
    output_within(&mut lincir_command(args), LIMIT)
}

/// The command `lincir` runs, to run with another limit or more settings.
pub fn lincir_command(args: &[&str]) -> Command {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("feature-cache");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lincir"));
    cmd.args(args).env("HF_HUB_OFFLINE", "1").env("LINCIR_CACHE", cache);
    cmd
}

/// How long one command of a test may run: a regression that makes a command loop (a folder
/// walk following links forever) fails its test instead of holding CI until its own limit.
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `cmd.output()`, killing the process and failing the test when it runs longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Both pipes drained as the process writes, so that it never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("{cmd:?} still running after {limit:?}: killed; stderr: {stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// clip-a (quick_gelu, real vocabulary) with the BPE files: a complete model directory.
pub fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for src in [fixtures().join("clip-a"), fixtures().join("bpe")] {
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

/// Exit code 1, a single `error:` line on stderr that contains every `needle`, no panic.
pub fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The device line every computing command prints first (and the bf16 hint on CPUs with
    // AVX512_BF16) is not part of the error.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("device: ") && !l.starts_with("hint: ")).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
}

/// A tiny uncompressed 24-bit BMP of one colour (the loaders read BMP like any other format).
pub fn write_bmp(path: &Path, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let (w, h) = (8u32, 8u32);
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    for _ in 0..h {
        for _ in 0..w {
            b.extend_from_slice(&[rgb[2], rgb[1], rgb[0]]);
        }
        b.resize(b.len() + (row - w * 3) as usize, 0);
    }
    std::fs::write(path, b).unwrap();
}


/// A running `lincir serve`, killed on drop.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lincir serve` on a free port with `args` and waits for its address line.
pub fn serve(args: &[&str]) -> Server {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lincir"))
        .arg("serve")
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .env("HF_HUB_OFFLINE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
    Server { child, base }
}

/// An HTTP agent that returns 4xx/5xx responses instead of failing on them.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// A multipart/form-data body of text fields and at most one file field named `image`.
pub fn multipart(fields: &[(&str, &str)], image: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "lincirtestboundary7d91";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    if let Some((name, bytes)) = image {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs to `url`, returning the status and the JSON body.
pub fn post(agent: &ureq::Agent, url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut r = agent.post(url).header("content-type", content_type).send(body).unwrap();
    let status = r.status().as_u16();
    let json = r.body_mut().read_json::<serde_json::Value>().unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Lays out a Hugging Face cache repository under `home` (`{kind}s--owner--name/{refs/main,
/// blobs, snapshots/<rev>}`) holding `files` (name in the repo, source file).
pub fn fake_hub_repo(home: &Path, kind: &str, id: &str, files: &[(&str, PathBuf)]) {
    let repo = home.join("hub").join(format!("{kind}s--{}", id.replace('/', "--")));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    for (i, (name, src)) in files.iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i}"));
        std::fs::copy(src, &blob).unwrap();
        let link = snap.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count() + 2;
        #[cfg(unix)]
        std::os::unix::fs::symlink(format!("{}blobs/blob{i}", "../".repeat(depth)), link).unwrap();
        // Where links need privileges (Windows), the hub's cache holds copies.
        #[cfg(not(unix))]
        let _ = (depth, std::fs::copy(&blob, link).unwrap());
    }
}

/// A copy of `file` outside the indexed folder: `search --image` decodes and embeds it (a file of
/// the index would stand for itself by its stored vector).
pub fn outside_copy(file: &Path) -> std::path::PathBuf {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let copy = std::env::temp_dir().join(format!("lincir-query-{}-{n}-{}", std::process::id(), file.file_name().unwrap().to_string_lossy()));
    std::fs::copy(file, &copy).unwrap();
    copy
}

/// A 16x16 JPEG of one colour whose EXIF says it was taken at `date` (EXIF's `YYYY:MM:DD
/// HH:MM:SS`, as IFD0's DateTime: a TIFF block of one entry, written out here).
pub fn write_dated_jpeg(path: &Path, rgb: [u8; 3], date: &str) {
    let mut tiff = b"II*\0\x08\0\0\0".to_vec(); // little-endian, IFD0 at byte 8
    tiff.extend(1u16.to_le_bytes()); // one entry:
    tiff.extend(0x0132u16.to_le_bytes()); // DateTime,
    tiff.extend(2u16.to_le_bytes()); // ASCII,
    tiff.extend(20u32.to_le_bytes()); // 19 characters and a NUL,
    tiff.extend(26u32.to_le_bytes()); // at byte 26 (8 + 2 + 12 + 4)
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    tiff.extend(date.as_bytes());
    tiff.push(0);
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new(&mut bytes);
    image::ImageEncoder::set_exif_metadata(&mut encoder, tiff).unwrap();
    encoder.encode_image(&image::RgbImage::from_pixel(16, 16, image::Rgb(rgb))).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}
