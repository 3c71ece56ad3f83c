//! `lincir index`, `search` and `serve` on the committed tiny CLIP and generated images: the
//! index is incremental, searches work from a file or an id, and the HTTP API answers bad input
//! with a 4xx JSON error while staying up.

mod common;

use std::path::Path;

use common::*;

const COLOURS: [[u8; 3]; 6] = [[220, 30, 30], [30, 200, 40], [30, 40, 220], [230, 220, 30], [10, 10, 10], [245, 245, 245]];

fn colours(dir: &Path) {
    for (i, rgb) in COLOURS.iter().enumerate() {
        write_bmp(&dir.join(format!("sub/img{i}.bmp")), *rgb);
    }
}

/// Runs `lincir index` and returns (images, added, updated, removed, unchanged, unreadable).
fn index(model: &str, images: &Path, out: &Path) -> [usize; 6] {
    let o = lincir(&["index", "--model", model, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    counts(&String::from_utf8_lossy(&o.stdout))
}

/// (images, added, updated, removed, unchanged, unreadable) from `lincir index`'s table.
fn counts(stdout: &str) -> [usize; 6] {
    let cells: Vec<usize> = stdout.lines().nth(2).unwrap().split('|').filter_map(|c| c.trim().parse().ok()).collect();
    cells[..6].try_into().unwrap()
}

/// Six one-colour images indexed with clip-a: (model path, images folder, index folder).
fn indexed_colours(model: &tempfile::TempDir, work: &tempfile::TempDir) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let m = model.path().to_str().unwrap().to_string();
    let (images, out) = (work.path().join("photos"), work.path().join("index"));
    colours(&images);
    assert_eq!(index(&m, &images, &out), [6, 6, 0, 0, 0, 0]);
    (m, images, out)
}

#[test]
fn indexing_is_incremental_and_search_finds_the_same_image() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let m = m.as_str();
    let written = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        #[cfg(unix)]
        let file = std::os::unix::fs::MetadataExt::ino(&m);
        // (Windows: a file written again is a new file, created now.)
        #[cfg(not(unix))]
        let file = m.created().unwrap();
        (file, m.modified().unwrap())
    };
    let before = written(&out.join("index.json"));
    assert_eq!(index(m, &images, &out), [6, 0, 0, 0, 6, 0], "nothing is re-embedded");
    assert_eq!(written(&out.join("index.json")), before, "nor is index.json rewritten (a running serve would read it again)");
    std::fs::remove_file(images.join("sub/img0.bmp")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_bmp(&images.join("sub/img1.bmp"), [200, 0, 200]);
    write_bmp(&images.join("new.bmp"), [0, 120, 120]);
    assert_eq!(index(m, &images, &out), [6, 1, 1, 1, 4, 0]);
    let report = work.path().join("report.json");
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(o.status.success());
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["total"].as_u64(), r["unchanged"].as_u64(), r["added"].as_u64()), (Some(6), Some(6), Some(0)));

    // An image searched for by file finds itself first, and so does its id.
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", outside_copy(&images.join("sub/img3.bmp")).to_str().unwrap(), "-k", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["mode"], "image");
    assert_eq!(r["hits"][0]["path"], "sub/img3.bmp");
    assert!((r["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    let id = r["hits"][0]["id"].as_u64().unwrap().to_string();
    let phi = fixtures().join("phi_official.pt");
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--phi", phi.to_str().unwrap(), "--id", &id, "--text", "is blue", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["mode"].as_str(), r["sentence"].as_str()), (Some("composed"), Some("a photo of $ that is blue")));
    assert_eq!(r["hits"].as_array().unwrap().len(), 5, "the other images, not the reference");

    // Another model's index is refused.
    let other = work.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    for e in std::fs::read_dir(model.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), other.join(e.file_name())).unwrap();
    }
    let cfg = other.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"layer_norm_eps\": 1e-05", "\"layer_norm_eps\": 1e-06");
    std::fs::write(&cfg, text).unwrap();
    let o = lincir(&["index", "--model", other.to_str().unwrap(), "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_clean_failure(&o, &["index.json", "was built with model"]);
}

#[test]
fn the_api_answers_bad_input_with_json_errors_and_stays_up() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (_, images, out) = indexed_colours(&model, &work);
    let phi = fixtures().join("phi_official.pt");
    let server = serve(&["--index", out.to_str().unwrap(), "--phi", phi.to_str().unwrap(), "--max-upload-mib", "1"]);
    let agent = http();
    let url = |p: &str| format!("{}{p}", server.base);

    let info: serde_json::Value = agent.get(&url("/api/info")).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(info["images"], 6);
    let page = agent.get(&url("/")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(page.contains("composed image search"));

    // Good requests: JSON by id, multipart with an upload.
    let (s, r) = post(&agent, &url("/api/search"), "application/json", br#"{"id": 2, "text": "is red", "k": 3}"#);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["hits"].as_array().unwrap().len(), 3);
    let bmp = std::fs::read(images.join("sub/img4.bmp")).unwrap();
    let (ct, body) = multipart(&[("text", "is white"), ("k", "2")], Some(("x.bmp", &bmp)));
    let (s, r) = post(&agent, &url("/api/search"), &ct, &body);
    assert_eq!(s, 200, "{r}");
    assert!(r["encode_ms"].as_f64().is_some() && r["rank_ms"].as_f64().is_some());
    let (ct, body) = multipart(&[("k", "1")], Some(("x.bmp", &bmp)));
    let (_, r) = post(&agent, &url("/api/search"), &ct, &body);
    assert_eq!(r["hits"][0]["path"], "sub/img4.bmp", "an uploaded copy of an indexed image finds it");

    // Bad requests: each a 4xx with a JSON error.
    let big = vec![0u8; 2 * 1024 * 1024];
    let long = "word ".repeat(100);
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("no image and no text", "application/json".into(), b"{}".to_vec(), 400),
        ("unknown id", "application/json".into(), br#"{"id": 999, "text": "x"}"#.to_vec(), 404),
        ("text over 77 tokens", "application/json".into(), format!("{{\"text\": \"{long}\"}}").into_bytes(), 400),
        ("malformed JSON", "application/json".into(), b"{id: }".to_vec(), 400),
        ("k out of range", "application/json".into(), br#"{"text": "x", "k": 100000}"#.to_vec(), 400),
        ("wrong content type", "text/plain".into(), b"hello".to_vec(), 415),
    ];
    for (what, ct, body, want) in cases {
        let (s, r) = post(&agent, &url("/api/search"), &ct, &body);
        assert_eq!(s, want, "{what}: {r}");
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {r}");
    }
    let (ct, body) = multipart(&[("text", "x")], Some(("notes.txt", b"not an image at all")));
    let (s, r) = post(&agent, &url("/api/search"), &ct, &body);
    assert_eq!(s, 415, "{r}");
    let (ct, body) = multipart(&[("text", "x")], Some(("big.bmp", &big)));
    let (s, r) = post(&agent, &url("/api/search"), &ct, &body);
    assert_eq!(s, 413, "{r}");
    let malformed = [
        ("/api/images/999", 404),
        ("/api/images/..%2F..%2Fetc%2Fpasswd", 400),
        ("/api/images/-1", 400),
        ("/api/images/%FF", 400),
        ("/api/images?offset=abc", 400),
        ("/api/images?limit=99999999999999999999999", 400),
        ("/api/images?containing=-1", 400),
        ("/api/images?containing=999", 404),
        ("/api/nothing", 404),
        ("/api/search", 405),
    ];
    for (path, want) in malformed {
        let mut resp = agent.get(&url(path)).call().unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path}");
        let r: serde_json::Value = resp.body_mut().read_json().unwrap();
        assert!(r["error"].is_string(), "{path}: {r}");
    }
    let resp = agent.get(&url("/api/../../etc/passwd")).call().unwrap();
    assert!(resp.status().as_u16() >= 400, "no file outside the index is served");
    let mut resp = agent.get(&url("/api/images/0")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("content-type").unwrap(), "image/bmp");
    assert!(!resp.body_mut().read_to_vec().unwrap().is_empty());
    // Previews: a JPEG at most `max` pixels on its long edge (these images are smaller: kept).
    let mut resp = agent.get(&url("/api/images/0?max=256")).call().unwrap();
    assert_eq!(resp.headers().get("content-type").unwrap(), "image/jpeg");
    let shown = image::load_from_memory(&resp.body_mut().read_to_vec().unwrap()).unwrap();
    let original = image::open(images.join("sub/img0.bmp")).unwrap();
    assert_eq!((shown.width(), shown.height()), (original.width(), original.height()));
    for bad in ["0", "5000", "big", "-3", ""] {
        let mut resp = agent.get(&url(&format!("/api/images/0?max={bad}"))).call().unwrap();
        assert_eq!(resp.status().as_u16(), 400, "max={bad}");
        let r: serde_json::Value = resp.body_mut().read_json().unwrap();
        assert!(r["error"].as_str().unwrap().contains("max"), "{r}");
    }

    // Still up.
    let info: serde_json::Value = agent.get(&url("/api/info")).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(info["images"], 6);
}

#[test]
fn an_interrupted_index_resumes_with_what_it_had_written() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let m = m.as_str();
    // The state an interruption leaves: rows appended after the last metadata save (garbage at
    // the end of the vectors file) and images not yet recorded in index.json.
    let meta_path = out.join("index.json");
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let vectors = out.join(meta["vectors_file"].as_str().unwrap());
    let entries = meta["entries"].as_array_mut().unwrap();
    entries.truncate(4);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let mut bytes = std::fs::read(&vectors).unwrap();
    bytes.extend_from_slice(&[0xAB; 37]);
    std::fs::write(&vectors, bytes).unwrap();
    assert_eq!(index(m, &images, &out), [6, 2, 0, 0, 4, 0], "only the 2 unrecorded images are embedded");
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", outside_copy(&images.join("sub/img5.bmp")).to_str().unwrap(), "-k", "1", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["hits"][0]["path"], "sub/img5.bmp");
    assert!((r["hits"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4, "vectors are intact after the repair");
}

#[test]
fn an_unreadable_image_stops_indexing_unless_skipping_is_asked() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let (images, out) = (work.path().join("photos"), work.path().join("index"));
    colours(&images);
    std::fs::write(images.join("sub/broken.png"), b"not a png").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        lincir(&args)
    };
    assert_clean_failure(&run(&[]), &["broken.png", "not a readable image"]);
    let o = run(&["--skip-bad-images"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| 6 | 6 | 0 | 0 | 0 | 1 |"), "6 indexed, 1 unreadable: {stdout}");
    assert!(stdout.contains("unreadable: sub/broken.png"), "{stdout}");
}

#[test]
fn the_api_serves_several_methods_and_refuses_unknown_ones_by_name() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (_, _, out) = indexed_colours(&model, &work);
    let phi = fixtures().join("phi_official.pt"); // 16 -> 24: fits clip-a
    let pic2word = fixtures().join("peers/pic2word.pt"); // IM2TEXT 16 -> 32 -> 24
    let (a, b, c) = (format!("lincir={}", phi.display()), format!("searle={}", phi.display()), format!("pic2word={}", pic2word.display()));
    let server = serve(&["--index", out.to_str().unwrap(), "--phi", &a, "--phi", &b, "--phi", &c]);
    let agent = http();
    let url = |p: &str| format!("{}{p}", server.base);
    let info: serde_json::Value = agent.get(&url("/api/info")).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(info["methods"], serde_json::json!(["lincir", "searle", "pic2word"]));
    for method in ["lincir", "searle", "pic2word"] {
        let body = format!(r#"{{"id": 2, "text": "is red", "k": 3, "method": "{method}"}}"#);
        let (s, r) = post(&agent, &url("/api/search"), "application/json", body.as_bytes());
        assert_eq!(s, 200, "{method}: {r}");
        assert_eq!(r["method"], method);
        let want = if method == "pic2word" { "a photo of * , is red" } else { "a photo of $ that is red" };
        assert_eq!(r["sentence"], want, "{method}: its own template");
        let (ct, form) = multipart(&[("id", "1"), ("text", "is blue"), ("method", method)], None);
        let (s, r) = post(&agent, &url("/api/search"), &ct, &form);
        assert_eq!((s, r["method"].as_str()), (200, Some(method)), "{r}");
    }
    let (s, r) = post(&agent, &url("/api/search"), "application/json", br#"{"id": 2, "text": "is red", "method": "clip4cir"}"#);
    assert_eq!(s, 400, "{r}");
    let e = r["error"].as_str().unwrap();
    assert!(e.contains("clip4cir") && e.contains("lincir, searle, pic2word"), "{e}");
    // The default is the first --phi.
    let (_, r) = post(&agent, &url("/api/search"), "application/json", br#"{"id": 2, "text": "is red"}"#);
    assert_eq!(r["method"], "lincir");
}

/// An index written before the int8 codes (format 1: vectors only) is searched as it is, and the
/// next `lincir index` adds the codes without re-embedding anything; results are the same.
#[test]
fn an_index_of_the_previous_format_is_searched_and_upgraded_in_place() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let meta_path = out.join("index.json");
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert_eq!(meta["format"], 2);
    let codes = meta["codes_file"].as_str().unwrap().to_string();
    // What an index of the previous format looks like (written before codes and ids).
    std::fs::remove_file(out.join(&codes)).unwrap();
    meta["format"] = 1.into();
    meta.as_object_mut().unwrap().remove("codes_file");
    meta.as_object_mut().unwrap().remove("next_id");
    for e in meta["entries"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("id");
    }
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let search = || {
        let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", outside_copy(&images.join("sub/img2.bmp")).to_str().unwrap(), "-k", "6", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["hits"].as_array().unwrap().iter().map(|h| (h["path"].as_str().unwrap().to_string(), h["score"].as_f64().unwrap())).collect::<Vec<_>>()
    };
    let before = search();
    assert_eq!(before[0].0, "sub/img2.bmp");
    assert_eq!(index(&m, &images, &out), [6, 0, 0, 0, 6, 0], "nothing is re-embedded");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert_eq!((meta["format"].as_u64(), meta["codes_file"].as_str()), (Some(2), Some(codes.as_str())));
    // Images keep the ids they had, their positions, now written down.
    let ids: Vec<u64> = meta["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!((ids, meta["next_id"].as_u64()), ((0..6).collect(), Some(6)));
    assert!(out.join(&codes).is_file());
    assert_eq!(search(), before);
    // A format from the future is refused by name.
    let mut future = meta.clone();
    future["format"] = 99.into();
    std::fs::write(&meta_path, future.to_string()).unwrap();
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--text", "red", "--json"]);
    assert_clean_failure(&o, &["index.json", "index format 99 is not supported"]);
}

/// (Builds with the `heic` feature read HEIC: `tests/heic_photos.rs`.)
#[cfg(not(feature = "heic"))]
#[test]
fn photos_in_formats_lincir_cannot_read_are_counted_and_named_not_lost_silently() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("phone");
    colours(&images);
    for name in ["IMG_0001.HEIC", "IMG_0002.heic", "sub/IMG_0003.heic", "raw/DSC_0001.NEF", "notes.txt"] {
        let p = images.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"not decoded").unwrap();
    }
    let (out, report) = (work.path().join("index"), work.path().join("report.json"));
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("not read: 3 .heic, 1 .nef") && stdout.contains("--features heic"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["total"].as_u64(), r["unsupported"]["heic"].as_u64(), r["unsupported"]["nef"].as_u64()), (Some(6), Some(3), Some(1)));
    assert!(r["unsupported"].get("txt").is_none(), "only photo formats are counted");

    // A folder holding only such photos is an error that says why, not "no image files".
    let only = work.path().join("only-heic");
    std::fs::create_dir_all(&only).unwrap();
    std::fs::write(only.join("a.heic"), b"x").unwrap();
    let o = lincir(&["embed", "--model", m, "--images", only.to_str().unwrap(), "--out", work.path().join("e.safetensors").to_str().unwrap()]);
    assert_clean_failure(&o, &["no image files lincir can read", "1 .heic", "convert them to JPEG"]);
}

/// A photo folder as users have them: links to folders (followed, each folder walked once, so
/// two links back to the folder itself, which made the walk exponential, cost nothing), and
/// hidden entries left out and counted: thumbnail caches, Synology's @eaDir, macOS resource forks.
#[cfg(unix)]
#[test]
fn links_loops_and_hidden_folders_in_a_photo_folder() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("Pictures");
    colours(&images);
    let elsewhere = work.path().join("elsewhere");
    write_bmp(&elsewhere.join("linked.bmp"), [90, 60, 30]);
    std::os::unix::fs::symlink(&elsewhere, images.join("album")).unwrap();
    std::os::unix::fs::symlink(&images, images.join("again")).unwrap();
    std::os::unix::fs::symlink(&images, images.join("sub/up")).unwrap();
    write_bmp(&images.join(".thumbnails/t0.bmp"), [1, 2, 3]);
    write_bmp(&images.join("sub/@eaDir/t1.bmp"), [1, 2, 3]);
    std::fs::write(images.join("sub/._img0.bmp"), b"\0\x05\x16\x07 AppleDouble").unwrap();
    let (out, report) = (work.path().join("index"), work.path().join("report.json"));
    let mut index = lincir_command(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    // Seconds here; a walk that follows the links again would not end (killed, and failed).
    let o = output_within(&mut index, std::time::Duration::from_secs(60));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("left out: 2 hidden folders and 1 hidden image"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["total"].as_u64(), r["hidden_folders"].as_u64(), r["hidden_images"].as_u64()), (Some(7), Some(2), Some(1)), "{r}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let paths: Vec<&str> = meta["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["album/linked.bmp", "sub/img0.bmp", "sub/img1.bmp", "sub/img2.bmp", "sub/img3.bmp", "sub/img4.bmp", "sub/img5.bmp"]);
}

/// Windows: what Explorer hides (the hidden or system attribute, set here with `attrib`) is left
/// out and counted, as names starting with `.` are.
#[cfg(windows)]
#[test]
fn windows_hidden_files_and_folders_are_left_out() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("Pictures");
    colours(&images);
    write_bmp(&images.join("private/p0.bmp"), [1, 2, 3]);
    write_bmp(&images.join("sub/hidden.bmp"), [4, 5, 6]);
    for (flag, path) in [("+h", images.join("private")), ("+s", images.join("sub/hidden.bmp"))] {
        let o = std::process::Command::new("attrib").arg(flag).arg(&path).output().unwrap();
        assert!(o.status.success(), "attrib {flag}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let (out, report) = (work.path().join("index"), work.path().join("report.json"));
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["total"].as_u64(), r["hidden_folders"].as_u64(), r["hidden_images"].as_u64()), (Some(6), Some(1), Some(1)), "{r}");
}

/// One index over several places through a folder of links; a link whose drive is not mounted
/// keeps what was indexed under it (no re-embedding when it is back), and an indexed folder found
/// empty (a mount point without its drive) is refused, the index left as it was.
#[cfg(unix)]
#[test]
fn photos_behind_a_link_that_cannot_be_reached_stay_indexed() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let (roots, nas, out) = (work.path().join("roots"), work.path().join("nas"), work.path().join("index"));
    colours(&roots.join("laptop"));
    write_bmp(&nas.join("2020/a.bmp"), [200, 10, 10]);
    write_bmp(&nas.join("2021/b.bmp"), [10, 200, 10]);
    std::os::unix::fs::symlink(&nas, roots.join("nas")).unwrap();
    assert_eq!(index(m, &roots, &out), [8, 8, 0, 0, 0, 0]);
    let ids = |out: &Path| -> Vec<(String, u64)> {
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
        meta["entries"].as_array().unwrap().iter().map(|e| (e["path"].as_str().unwrap().to_string(), e["id"].as_u64().unwrap())).collect()
    };
    let before = ids(&out);

    // The drive is gone: its two photos stay, and the run says why.
    let away = work.path().join("nas-unmounted");
    std::fs::rename(&nas, &away).unwrap();
    let report = work.path().join("report.json");
    let o = lincir(&["index", "--model", m, "--images", roots.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(counts(&stdout), [8, 0, 0, 0, 6, 0], "{stdout}");
    assert!(stdout.contains("not reachable: nas: a link to") && stdout.contains("the 2 images indexed under it are kept"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["unreachable"][0]["path"].as_str(), r["unreachable"][0]["kept"].as_u64()), (Some("nas"), Some(2)), "{r}");
    assert_eq!(ids(&out), before);
    // `embed` says what it passed over too.
    let o = lincir(&["embed", "--model", m, "--images", roots.to_str().unwrap(), "--out", work.path().join("e.safetensors").to_str().unwrap()]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not reachable: "), "{}", String::from_utf8_lossy(&o.stderr));

    // Back: nothing to embed again.
    std::fs::rename(&away, &nas).unwrap();
    assert_eq!(index(m, &roots, &out), [8, 0, 0, 0, 8, 0]);
    assert_eq!(ids(&out), before);
    // The link deleted: its photos are dropped.
    std::fs::remove_file(roots.join("nas")).unwrap();
    assert_eq!(index(m, &roots, &out), [6, 0, 0, 2, 6, 0]);

    // An indexed folder found empty is refused; the index is left as it was.
    let laptop_index = work.path().join("laptop-index");
    assert_eq!(index(m, &roots.join("laptop"), &laptop_index), [6, 6, 0, 0, 0, 0]);
    let meta = std::fs::read(laptop_index.join("index.json")).unwrap();
    std::fs::rename(roots.join("laptop"), work.path().join("laptop-away")).unwrap();
    std::fs::create_dir(roots.join("laptop")).unwrap();
    let o = lincir(&["index", "--model", m, "--images", roots.join("laptop").to_str().unwrap(), "--out", laptop_index.to_str().unwrap()]);
    assert_clean_failure(&o, &["holds no images now, and the index holds 6", "left as it is"]);
    assert_eq!(std::fs::read(laptop_index.join("index.json")).unwrap(), meta);
}

/// Photos moved to other folders (same name, size and time) or renamed (same content, size and
/// time) keep their vectors and ids; one edited on the way is another photo, and so is another
/// file with a gone photo's size and time.
#[test]
fn moved_and_renamed_photos_keep_their_vectors_and_ids() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let ids = || -> std::collections::BTreeMap<String, u64> {
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
        meta["entries"].as_array().unwrap().iter().map(|e| (e["path"].as_str().unwrap().to_string(), e["id"].as_u64().unwrap())).collect()
    };
    let before = ids();
    // The top hit of a photo embedded again from a copy outside the index (one colour each).
    let top_hit = |file: &Path| {
        let copy = outside_copy(file);
        let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", copy.to_str().unwrap(), "-k", "1", "--json"]);
        std::fs::remove_file(copy).unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        r["hits"][0]["path"].as_str().unwrap().to_string()
    };
    std::fs::create_dir_all(images.join("2024/album")).unwrap();
    for i in [1, 2] {
        std::fs::rename(images.join(format!("sub/img{i}.bmp")), images.join(format!("2024/album/img{i}.bmp"))).unwrap();
    }
    // Moved and edited: not the same photo any more.
    std::fs::remove_file(images.join("sub/img3.bmp")).unwrap();
    write_bmp(&images.join("2024/img3.bmp"), [1, 1, 1]);
    // Renamed, and renamed into another folder: recognised by their content.
    std::fs::rename(images.join("sub/img4.bmp"), images.join("sub/renamed.bmp")).unwrap();
    std::fs::rename(images.join("sub/img0.bmp"), images.join("2024/2023-07-14 18.03.00.bmp")).unwrap();
    // Another photo (another colour) put in place of a gone one with its size and time: new.
    let gone_time = std::fs::metadata(images.join("sub/img5.bmp")).unwrap().modified().unwrap();
    std::fs::remove_file(images.join("sub/img5.bmp")).unwrap();
    write_bmp(&images.join("sub/impostor.bmp"), [2, 200, 2]);
    std::fs::File::options().write(true).open(images.join("sub/impostor.bmp")).unwrap().set_modified(gone_time).unwrap();
    let o = lincir(&["index", "--model", &m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", out.join("run.json").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // images, added, updated, removed, unchanged, unreadable
    assert_eq!(counts(&stdout), [6, 2, 0, 2, 4, 0], "{stdout}");
    assert!(stdout.contains("2 of the unchanged images were moved to new folders"), "{stdout}");
    assert!(stdout.contains("2 of the unchanged images were renamed (same content, size and time)"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!((report["moved"].as_u64(), report["renamed"].as_u64()), (Some(2), Some(2)));
    let after = ids();
    for i in [1, 2] {
        assert_eq!(after[&format!("2024/album/img{i}.bmp")], before[&format!("sub/img{i}.bmp")]);
    }
    assert_eq!(after["sub/renamed.bmp"], before["sub/img4.bmp"]);
    assert_eq!(after["2024/2023-07-14 18.03.00.bmp"], before["sub/img0.bmp"]);
    assert!(after["2024/img3.bmp"] > *before.values().max().unwrap());
    assert!(after["sub/impostor.bmp"] > *before.values().max().unwrap());
    // The moved and renamed photos' vectors came with them; the impostor has its own.
    for path in ["2024/album/img1.bmp", "2024/album/img2.bmp", "sub/renamed.bmp", "2024/2023-07-14 18.03.00.bmp", "sub/impostor.bmp"] {
        assert_eq!(top_hit(&images.join(path)), path);
    }
}

/// A library moved to another disk or mount point: its index follows it (ids kept, nothing
/// embedded again) when the old folder is gone and the images are found in the new one; another
/// folder is refused, whether the old one is there or not.
#[test]
fn an_index_follows_its_folder_to_a_new_place() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let meta = || std::fs::read_to_string(out.join("index.json")).unwrap();
    let ids = |meta: &str| -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(meta).unwrap();
        v["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect()
    };
    let before = meta();
    let elsewhere = work.path().join("other");
    write_bmp(&elsewhere.join("x.bmp"), [3, 4, 5]);
    let run = |folder: &Path| lincir(&["index", "--model", &m, "--images", folder.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_clean_failure(&run(&elsewhere), &["indexes", "not"]);
    let moved = work.path().join("disk2/photos");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&images, &moved).unwrap();
    // The old folder gone, an unrelated one is still refused, the index untouched.
    assert_clean_failure(&run(&elsewhere), &["none of its 6 images is here unchanged"]);
    assert_eq!(meta(), before);
    let o = run(&moved);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(counts(&stdout), [6, 0, 0, 0, 6, 0], "{stdout}");
    assert!(stdout.contains("the indexed folder moved from"), "{stdout}");
    let after = meta();
    assert_eq!(ids(&after), ids(&before));
    assert!(after.contains("disk2"), "{after}");
    // Searches open the files in their new place.
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--id", "0", "-k", "2"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).replace('\\', "/").contains("disk2/photos"), "{}", String::from_utf8_lossy(&o.stdout));
}

/// A folder that cannot be listed stops `index` with its name; with `--skip-bad-images` it is
/// listed as unreadable and the rest is indexed. Run as root (whom permissions do not stop), the
/// binary runs as `nobody`.
#[cfg(unix)]
#[test]
fn an_unreadable_folder_stops_indexing_unless_skipping_is_asked() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let images = work.path().join("photos");
    colours(&images);
    write_bmp(&images.join("locked/secret.bmp"), [5, 6, 7]);
    let open = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    open(&images.join("locked"), 0o000);
    let root = std::fs::read_dir(images.join("locked")).is_ok();
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    if root {
        for p in [model.path(), work.path(), &images, &images.join("sub")] {
            open(p, 0o755);
        }
        for e in std::fs::read_dir(model.path()).unwrap() {
            open(&e.unwrap().path(), 0o644);
        }
        std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    }
    let run = |extra: &[&str]| {
        let index = out.join("index");
        let mut args = vec!["index", "--model", model.path().to_str().unwrap(), "--images", images.to_str().unwrap(), "--out", index.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lincir"));
        cmd.args(&args).env("HF_HUB_OFFLINE", "1").env("LINCIR_CACHE", out.join("cache"));
        if root {
            cmd.uid(65534).gid(65534);
        }
        output_within(&mut cmd, LIMIT)
    };
    assert_clean_failure(&run(&[]), &["locked", "cannot list directory"]);
    let o = run(&["--skip-bad-images"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("unreadable: locked/: cannot list directory"), "{stdout}");
    assert_eq!(counts(&stdout), [6, 6, 0, 0, 0, 1], "{stdout}");
    // Readable again, its image is indexed; unreadable once more, it is kept, not dropped.
    open(&images.join("locked"), 0o755);
    let o = run(&[]);
    assert_eq!(counts(&String::from_utf8_lossy(&o.stdout)), [7, 1, 0, 0, 6, 0], "{}", String::from_utf8_lossy(&o.stderr));
    open(&images.join("locked"), 0o000);
    let o = run(&["--skip-bad-images"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(counts(&stdout), [7, 0, 0, 0, 6, 1], "{stdout}");
    assert!(stdout.contains("not reachable: locked: cannot list directory") && stdout.contains("the 1 image indexed under it is kept"), "{stdout}");
    open(&images.join("locked"), 0o755);
}

/// Reads `embed`'s output: rows of `embeddings`.
fn embedding_rows(path: &Path) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("embeddings").unwrap();
    let values: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    values.chunks(t.shape()[1]).map(<[f32]>::to_vec).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// `--jpeg-decode fast`: a large JPEG's vector moves a little and a BMP's not at all; an index
/// records the choice, keeps it on later runs without the flag, refuses the other one by name,
/// and its searcher decodes query images as the index did.
#[test]
fn fast_jpeg_decoding_is_recorded_by_the_index_and_followed_by_searches() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("photos");
    colours(&images);
    // clip-a's input is 32 pixels: these photos decode at 1/4 (512 // 96 = 5) and 1/4.
    for name in ["astronaut_512x512.jpg", "rocket_427x640.jpg"] {
        std::fs::copy(fixtures().join("images").join(name), images.join(name)).unwrap();
    }
    let embed = |mode: &str| {
        let out = work.path().join(format!("{mode}.safetensors"));
        let o = lincir(&["embed", "--model", m, "--images", images.to_str().unwrap(), "--jpeg-decode", mode, "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        embedding_rows(&out)
    };
    let (exact, fast) = (embed("exact"), embed("fast"));
    // Sorted paths: the two JPEGs, then sub/img0..5.bmp.
    for (i, (e, f)) in exact.iter().zip(&fast).enumerate() {
        if i < 2 {
            assert!(e != f, "row {i}: a reduced decode gives other pixels");
            assert!(cosine(e, f) > 0.99, "row {i}: cosine {}", cosine(e, f));
        } else {
            assert_eq!(e, f, "row {i}: a BMP is decoded whole either way");
        }
    }
    let o = lincir(&["embed", "--model", m, "--images", images.to_str().unwrap(), "--jpeg-decode", "fast", "--preprocess", "targetpad", "--out", work.path().join("x.safetensors").to_str().unwrap()]);
    assert_clean_failure(&o, &["--jpeg-decode fast", "targetpad"]);

    let out = work.path().join("index");
    let run = |extra: &[&str]| {
        let mut args = vec!["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        lincir(&args)
    };
    let o = run(&["--jpeg-decode", "fast"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(meta["jpeg"], "fast");
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(index(m, &images, &out), [8, 0, 0, 0, 8, 0], "kept without the flag: nothing re-embedded");
    assert_clean_failure(&run(&["--jpeg-decode", "exact"]), &["index.json", "decodes JPEGs `fast`, not `exact`"]);

    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", outside_copy(&images.join("astronaut_512x512.jpg")).to_str().unwrap(), "-k", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["hits"][0]["path"], "astronaut_512x512.jpg");
    // The two decodings' vectors are too close on this tiny CLIP to tell apart by a score:
    // the searcher's own preprocessing says how queries are decoded.
    let clip = lincir::clip::Clip::load(m, &Default::default()).unwrap();
    assert_eq!(clip.preprocess.jpeg, lincir::clip::preprocess::JpegDecode::Exact);
    let searcher = lincir::search::Searcher::new(clip, vec![], lincir::index::Index::open(&out).unwrap()).unwrap();
    assert_eq!(searcher.clip.preprocess.jpeg, lincir::clip::preprocess::JpegDecode::Fast, "queries are decoded as the index's images");

    // An exact index's metadata is as before the choice existed.
    let plain = work.path().join("plain");
    assert_eq!(index(m, &images, &plain), [8, 8, 0, 0, 0, 0]);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(plain.join("index.json")).unwrap()).unwrap();
    assert!(meta.get("jpeg").is_none(), "{meta}");
}

/// An unreadable image in the second round of 256 stops `index` with its name, and the first
/// round, embedded before it, is kept (`index.json` is written before the error is reported,
/// not only every 10 s): the rerun that skips bad images embeds only the rest.
#[test]
fn an_index_stopped_by_a_bad_image_keeps_what_it_embedded() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("photos");
    for i in 0..300u32 {
        write_bmp(&images.join(format!("a{i:03}.bmp")), [(i * 7 % 256) as u8, (i * 13 % 256) as u8, (i * 29 % 256) as u8]);
    }
    std::fs::write(images.join("z-broken.bmp"), b"BM not really").unwrap();
    let out = work.path().join("index");
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_clean_failure(&o, &["z-broken.bmp"]);
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--skip-bad-images"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(counts(&stdout), [300, 44, 0, 0, 256, 1], "{stdout}");
}

/// path -> id of every entry of the index in `out`.
fn ids(out: &Path) -> std::collections::BTreeMap<String, u64> {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    meta["entries"].as_array().unwrap().iter().map(|e| (e["path"].as_str().unwrap().to_string(), e["id"].as_u64().unwrap())).collect()
}

/// The path `search --id` finds first (itself, in an image-only query).
fn searched_by_id(out: &Path, id: u64) -> String {
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--id", &id.to_string(), "-k", "1", "--keep-reference", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["hits"][0]["id"].as_u64(), Some(id));
    r["hits"][0]["path"].as_str().unwrap().to_string()
}

#[test]
fn an_image_keeps_its_id_while_the_folder_changes_around_it() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let first = ids(&out);
    assert_eq!(first.values().copied().collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
    // A new image sorting before all others, one removed, one changed.
    write_bmp(&images.join("a_first.bmp"), [0, 120, 120]);
    std::fs::remove_file(images.join("sub/img0.bmp")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_bmp(&images.join("sub/img1.bmp"), [200, 0, 200]);
    assert_eq!(index(&m, &images, &out), [6, 1, 1, 1, 4, 0]);
    let second = ids(&out);
    for (path, id) in &first {
        if path != "sub/img0.bmp" {
            assert_eq!(second.get(path), Some(id), "{path} (the changed sub/img1.bmp included)");
        }
    }
    assert_eq!(second.get("a_first.bmp"), Some(&6), "a new image gets a new id");
    assert_eq!(searched_by_id(&out, first["sub/img3.bmp"]), "sub/img3.bmp");
    // Compaction (a quarter of the rows left) rewrites the vectors; the ids stay.
    for i in 2..5 {
        std::fs::remove_file(images.join(format!("sub/img{i}.bmp"))).unwrap();
    }
    assert_eq!(index(&m, &images, &out), [3, 0, 0, 3, 3, 0]);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(meta["vectors_file"], "vectors-1.f32", "compacted");
    assert!(!out.join("vectors-0.f32").exists() && !out.join("codes-0.i8").exists(), "the earlier generation is deleted");
    // One a compaction could not delete (mapped by a server on Windows) goes on the next run;
    // files that only look alike stay.
    for stale in ["vectors-0.f32", "codes-0.i8", "vectors-.f32", "vectors-old.f32"] {
        std::fs::write(out.join(stale), b"x").unwrap();
    }
    assert_eq!(index(&m, &images, &out), [3, 0, 0, 0, 3, 0]);
    let left: Vec<bool> = ["vectors-0.f32", "codes-0.i8", "vectors-.f32", "vectors-old.f32", "vectors-1.f32", "codes-1.i8"].iter().map(|f| out.join(f).exists()).collect();
    assert_eq!(left, [false, false, true, true, true, true]);
    let third = ids(&out);
    assert_eq!(third.into_iter().collect::<Vec<_>>(), vec![("a_first.bmp".into(), 6), ("sub/img1.bmp".into(), 1), ("sub/img5.bmp".into(), 5)]);
    assert_eq!(searched_by_id(&out, 5), "sub/img5.bmp");
    assert_eq!(searched_by_id(&out, 6), "a_first.bmp");
    // An id no longer indexed is an error, not another image.
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--id", "0", "-k", "1"]);
    assert_clean_failure(&o, &["no image with id 0"]);
    // Two entries with one id (an index edited by hand) are refused by name.
    let mut meta = meta;
    meta["entries"][1]["id"] = 6.into();
    std::fs::write(out.join("index.json"), meta.to_string()).unwrap();
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--text", "red"]);
    assert_clean_failure(&o, &["index.json", "the same id 6"]);
    // Sizes whose products would wrap, or no size at all: refused before any is used.
    for (field, value, said) in [("rows", serde_json::json!(1u64 << 62), "rows cannot exist"), ("dim", 0.into(), "dim 0 is not an embedding size")] {
        let mut damaged = meta.clone();
        damaged["entries"][1]["id"] = 1.into();
        damaged[field] = value;
        std::fs::write(out.join("index.json"), damaged.to_string()).unwrap();
        let o = lincir(&["search", "--index", out.to_str().unwrap(), "--text", "red"]);
        assert_clean_failure(&o, &["index.json", said]);
    }
}

#[test]
fn serve_reloads_the_index_that_lincir_index_updates_and_ids_stay_valid() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    let server = serve(&["--index", out.to_str().unwrap(), "--reload-check-s", "1"]);
    let agent = http();
    let url = |p: &str| format!("{}{p}", server.base);
    let get = |p: &str| -> (u16, serde_json::Value) {
        let mut r = agent.get(&url(p)).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap_or(serde_json::Value::Null))
    };
    let wait_for_images = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while get("/api/info").1["images"].as_u64() != Some(n) {
            assert!(std::time::Instant::now() < deadline, "the server did not reload to {n} images");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let before = ids(&out);
    let img3 = before["sub/img3.bmp"];

    // An image that sorts first: every position moves, no id does.
    write_bmp(&images.join("a_first.bmp"), [0, 120, 120]);
    assert_eq!(index(&m, &images, &out), [7, 1, 0, 0, 6, 0]);
    wait_for_images(7);
    let (s, page) = get(&format!("/api/images?containing={img3}&limit=2"));
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["offset"], 4, "img3 is fifth in path order now");
    assert_eq!((page["items"][0]["id"].as_u64(), page["items"][0]["path"].as_str()), (Some(img3), Some("sub/img3.bmp")));
    let (s, r) = post(&agent, &url("/api/search"), "application/json", format!(r#"{{"id": {img3}, "k": 1, "keep_reference": true}}"#).as_bytes());
    assert_eq!((s, r["hits"][0]["path"].as_str()), (200, Some("sub/img3.bmp")), "{r}");
    let (s, r) = post(&agent, &url("/api/search"), "application/json", br#"{"id": 6, "k": 1, "keep_reference": true}"#);
    assert_eq!((s, r["hits"][0]["path"].as_str()), (200, Some("a_first.bmp")), "the new image is searchable: {r}");

    // A removed image's id is a 404, in search and for its file.
    std::fs::remove_file(images.join("sub/img0.bmp")).unwrap();
    assert_eq!(index(&m, &images, &out), [6, 0, 0, 1, 6, 0]);
    wait_for_images(6);
    let img0 = before["sub/img0.bmp"];
    let (s, r) = post(&agent, &url("/api/search"), "application/json", format!(r#"{{"id": {img0}, "k": 1}}"#).as_bytes());
    assert_eq!(s, 404, "{r}");
    assert_eq!(get(&format!("/api/images/{img0}")).0, 404);
    assert_eq!(get(&format!("/api/images?containing={img0}")).0, 404);

    // An edited photo keeps its id: browsers revalidate its file and preview (ETag, no-cache).
    let fetch = |path: &str, etag: Option<&str>| {
        let mut req = agent.get(&url(path));
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        let r = req.call().unwrap();
        (r.status().as_u16(), r.headers().get("etag").map(|v| v.to_str().unwrap().to_string()), r.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string()))
    };
    for path in [format!("/api/images/{img3}"), format!("/api/images/{img3}?max=64")] {
        let (s, etag, cache) = fetch(&path, None);
        assert_eq!((s, cache.as_deref()), (200, Some("no-cache")), "{path}");
        let etag = etag.unwrap();
        assert_eq!(fetch(&path, Some(&etag)).0, 304, "{path}: unchanged");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_bmp(&images.join("sub/img3.bmp"), [10, 200, 200]);
        let (s, new, _) = fetch(&path, Some(&etag));
        assert_eq!(s, 200, "{path}: edited");
        assert_ne!(new.unwrap(), etag);
    }

    // An index.json that cannot be read is not taken: the server keeps the one it has.
    std::fs::write(out.join("index.json"), "{").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(get("/api/info").1["images"], 6);
    let (s, r) = post(&agent, &url("/api/search"), "application/json", format!(r#"{{"id": {img3}, "k": 1, "keep_reference": true}}"#).as_bytes());
    assert_eq!((s, r["hits"][0]["path"].as_str()), (200, Some("sub/img3.bmp")), "{r}");
}

#[test]
fn a_search_leaves_out_its_reference_and_can_keep_to_a_folder() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    write_bmp(&images.join("other/copy3.bmp"), COLOURS[3]);
    assert_eq!(index(&m, &images, &out), [7, 1, 0, 0, 6, 0]);
    let img3 = ids(&out)["sub/img3.bmp"].to_string();
    let search = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["search", "--index", out.to_str().unwrap(), "--id", &img3, "-k", "3", "--json"];
        args.extend_from_slice(extra);
        let o = lincir(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let paths = |r: &serde_json::Value| r["hits"].as_array().unwrap().iter().map(|h| h["path"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    // "More like this one": the photo itself is not an answer, its copy is the first.
    let r = search(&[]);
    assert_eq!((paths(&r)[0].as_str(), paths(&r).len(), r["ranked"].as_u64()), ("other/copy3.bmp", 3, Some(7)));
    assert!(!paths(&r).contains(&"sub/img3.bmp".to_string()));
    let r = search(&["--keep-reference"]);
    assert_eq!(paths(&r)[..2], ["other/copy3.bmp", "sub/img3.bmp"], "a tie, in path order");
    // A file of the index given as --image is that indexed image: left out the same way.
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", images.join("sub/img3.bmp").to_str().unwrap(), "-k", "3", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((paths(&r)[0].as_str(), paths(&r).contains(&"sub/img3.bmp".to_string())), ("other/copy3.bmp", false), "{r}");
    // A folder: only its images are ranked.
    let r = search(&["--folder", "sub/"]);
    assert_eq!(r["ranked"], 6);
    assert!(paths(&r).iter().all(|p| p.starts_with("sub/") && p != "sub/img3.bmp"), "{r}");
    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--id", &img3, "--folder", "nowhere"]);
    assert_clean_failure(&o, &["no indexed image in the folder `nowhere`"]);

    // The same through the API, JSON and multipart.
    let server = serve(&["--index", out.to_str().unwrap()]);
    let agent = http();
    let url = format!("{}/api/search", server.base);
    let (s, r) = post(&agent, &url, "application/json", format!(r#"{{"id": {img3}, "k": 5, "folder": "other"}}"#).as_bytes());
    assert_eq!((s, paths(&r), r["ranked"].as_u64()), (200, vec!["other/copy3.bmp".to_string()], Some(1)), "{r}");
    let (ct, body) = multipart(&[("id", &img3), ("k", "2"), ("keep_reference", "true")], None);
    let (s, r) = post(&agent, &url, &ct, &body);
    assert_eq!((s, paths(&r)), (200, vec!["other/copy3.bmp".to_string(), "sub/img3.bmp".to_string()]), "{r}");
    let (ct, body) = multipart(&[("id", &img3), ("keep_reference", "perhaps")], None);
    assert_eq!(post(&agent, &url, &ct, &body).0, 400);
    let (s, r) = post(&agent, &url, "application/json", format!(r#"{{"id": {img3}, "folder": "nowhere"}}"#).as_bytes());
    assert_eq!(s, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("nowhere"), "{r}");
}

#[test]
fn a_second_index_run_on_the_same_index_waits_its_turn() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let (m, images, out) = indexed_colours(&model, &work);
    write_bmp(&images.join("new.bmp"), [0, 120, 120]);
    // What a run in progress holds (its lock; a killed run's lock goes with its process).
    let held = std::fs::OpenOptions::new().read(true).write(true).open(out.join("index.lock")).unwrap();
    held.lock().unwrap();
    let o = lincir(&["index", "--model", &m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    // (Windows' locks are mandatory: there the holder's process id cannot be read, and is left out.)
    assert_clean_failure(&o, &[if cfg!(windows) { "another `lincir index` is updating this index" } else { "another `lincir index` is updating this index (process" }]);
    drop(held); // the run has finished
    assert_eq!(index(&m, &images, &out), [7, 1, 0, 0, 6, 0]);
}

#[test]
fn searches_keep_to_the_dates_photos_were_taken() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let (images, out) = (work.path().join("photos"), work.path().join("index"));
    write_dated_jpeg(&images.join("2021/a.jpg"), [200, 30, 30], "2021:05:01 10:00:00");
    write_dated_jpeg(&images.join("2023/b.jpg"), [30, 200, 30], "2023:07:14 18:03:22");
    write_dated_jpeg(&images.join("2023/c.jpg"), [30, 30, 200], "2023:08:31 23:59:59");
    write_bmp(&images.join("undated.bmp"), [120, 120, 120]);
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 of 4 images say when they were taken"));
    let search = |extra: &[&str]| {
        let mut args = vec!["search", "--index", out.to_str().unwrap(), "--text", "a photo", "-k", "10", "--json"];
        args.extend_from_slice(extra);
        lincir(&args)
    };
    let found = |extra: &[&str]| -> (Vec<String>, u64) {
        let o = search(extra);
        assert!(o.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut paths: Vec<String> = r["hits"].as_array().unwrap().iter().map(|h| h["path"].as_str().unwrap().to_string()).collect();
        paths.sort();
        (paths, r["ranked"].as_u64().unwrap())
    };
    assert_eq!(found(&[]), (vec!["2021/a.jpg".into(), "2023/b.jpg".into(), "2023/c.jpg".into(), "undated.bmp".into()], 4));
    assert_eq!(found(&["--taken-from", "2023"]), (vec!["2023/b.jpg".into(), "2023/c.jpg".into()], 2));
    assert_eq!(found(&["--taken-to", "2023-08-30"]), (vec!["2021/a.jpg".into(), "2023/b.jpg".into()], 2));
    assert_eq!(found(&["--taken-from", "2023-08", "--taken-to", "2023-08"]), (vec!["2023/c.jpg".into()], 1), "a bound includes its whole month");
    assert_eq!(found(&["--taken-from", "2021-05-01 10:00", "--taken-to", "2021-05-01T10:00:00", "--folder", "2021"]), (vec!["2021/a.jpg".into()], 1));
    let o = search(&["--taken-from", "2023-08"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["hits"][0]["taken"], "2023-08-31T23:59:59");
    assert_clean_failure(&search(&["--taken-from", "2024"]), &["no indexed photo was taken within 2024 to the last"]);
    assert_clean_failure(&search(&["--taken-to", "yesterday"]), &["`yesterday` is not a date"]);

    // An index made before dates were recorded: a date filter asks for one more `lincir index`,
    // which reads the dates of the photos it already has without embedding them again.
    let meta_path = out.join("index.json");
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("dates");
    for e in meta["entries"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("taken");
    }
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    assert_clean_failure(&search(&["--taken-from", "2023"]), &["run `lincir index` on it once more"]);
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(counts(&String::from_utf8_lossy(&o.stdout)), [4, 0, 0, 0, 4, 0]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("read when 4 already indexed photos were taken"));
    assert_eq!(found(&["--taken-from", "2023"]).1, 2);

    // The API: JSON and multipart.
    let server = serve(&["--index", out.to_str().unwrap()]);
    let agent = http();
    let url = format!("{}/api/search", server.base);
    let (s, r) = post(&agent, &url, "application/json", br#"{"text": "a photo", "taken_from": "2023-08"}"#);
    assert_eq!((s, r["hits"][0]["path"].as_str(), r["ranked"].as_u64()), (200, Some("2023/c.jpg"), Some(1)), "{r}");
    let (ct, body) = multipart(&[("text", "a photo"), ("taken_to", "2021-12-31")], None);
    let (s, r) = post(&agent, &url, &ct, &body);
    assert_eq!((s, r["hits"][0]["path"].as_str(), r["ranked"].as_u64()), (200, Some("2021/a.jpg"), Some(1)), "{r}");
    let (s, r) = post(&agent, &url, "application/json", br#"{"text": "a photo", "taken_from": "2023-13"}"#);
    assert_eq!(s, 400, "{r}");
}

/// File names Linux allows and Windows does not: a `\` is part of a name, and a name that is not
/// UTF-8 (an old archive's Latin-1) cannot be written in index.json without changing it.
#[cfg(target_os = "linux")]
#[test]
fn unusual_file_names_are_indexed_as_they_are_or_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let (images, out) = (work.path().join("photos"), work.path().join("index"));
    write_bmp(&images.join("back\\slash.bmp"), [200, 30, 30]);
    write_bmp(&images.join("plain.bmp"), [30, 200, 30]);
    write_bmp(&images.join(std::ffi::OsStr::from_bytes(b"f\xe9rias.bmp")), [30, 30, 200]);
    let run = |extra: &[&str]| lincir(&[&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()], extra].concat());
    assert_clean_failure(&run(&[]), &["rias.bmp", "not valid UTF-8", "--skip-bad-images"]);
    let o = run(&["--skip-bad-images"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(counts(&String::from_utf8_lossy(&o.stdout)), [2, 2, 0, 0, 0, 1]);
    assert_eq!(counts(&String::from_utf8_lossy(&run(&["--skip-bad-images"]).stdout)), [2, 0, 0, 0, 2, 1], "nothing embedded again");
    // The page shows each indexed photo: the entry opens its file again.
    let server = serve(&["--index", out.to_str().unwrap()]);
    let list: serde_json::Value = http().get(&format!("{}/api/images", server.base)).call().unwrap().body_mut().read_json().unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|i| i["path"].as_str().unwrap()).collect::<Vec<_>>(), ["back\\slash.bmp", "plain.bmp"]);
    for item in items {
        let response = http().get(&format!("{}/api/images/{}", server.base, item["id"])).call().unwrap();
        assert_eq!(response.status(), 200, "{item}");
    }
}
