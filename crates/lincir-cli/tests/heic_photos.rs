//! HEIC photos in builds with the `heic` feature: indexed with the others, searched by file,
//! shown by `serve` as JPEGs; HEIC uploads refused by the server (its decoder is C code kept off
//! the network).
#![cfg(feature = "heic")]

mod common;

use common::*;

#[test]
fn heic_photos_are_indexed_searched_and_shown_as_jpeg() {
    let (model, work) = (model_dir(), tempfile::tempdir().unwrap());
    let m = model.path().to_str().unwrap();
    let images = work.path().join("iphone");
    std::fs::create_dir_all(&images).unwrap();
    write_bmp(&images.join("red.bmp"), [220, 30, 30]);
    for name in ["photo.heic", "rotated.heic", "alpha.heic", "ten_bit.heic"] {
        std::fs::copy(fixtures().join("heic").join(name), images.join(name.to_uppercase())).unwrap();
    }
    let (out, report) = (work.path().join("index"), work.path().join("report.json"));
    let o = lincir(&["index", "--model", m, "--images", images.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["total"].as_u64(), r["added"].as_u64()), (Some(5), Some(5)), "{r}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("not read"));

    let o = lincir(&["search", "--index", out.to_str().unwrap(), "--image", outside_copy(&images.join("ROTATED.HEIC")).to_str().unwrap(), "-k", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["hits"][0]["path"], "ROTATED.HEIC");
    let id = r["hits"][0]["id"].as_u64().unwrap();

    let server = serve(&["--index", out.to_str().unwrap()]);
    let agent = http();
    let mut resp = agent.get(&format!("{}/api/images/{id}", server.base)).call().unwrap();
    assert_eq!(resp.headers().get("content-type").unwrap(), "image/jpeg");
    let jpeg = resp.body_mut().read_to_vec().unwrap();
    let shown = image::load_from_memory(&jpeg).unwrap();
    assert_eq!((shown.width(), shown.height()), (192, 256), "upright, as indexed");

    let heic = std::fs::read(fixtures().join("heic/photo.heic")).unwrap();
    let (ct, body) = multipart(&[("k", "1")], Some(("upload.heic", &heic)));
    let (s, r) = post(&agent, &format!("{}/api/search", server.base), &ct, &body);
    assert_eq!(s, 415, "{r}");
    assert!(r["error"].as_str().unwrap().contains("HEIC"), "{r}");
    let info: serde_json::Value = agent.get(&format!("{}/api/info", server.base)).call().unwrap().body_mut().read_json().unwrap();
    assert_eq!(info["images"], 5, "still up");
}
