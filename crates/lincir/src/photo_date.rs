//! When a photo was taken, from its EXIF data: `DateTimeOriginal`, else `DateTimeDigitized`, else
//! `DateTime`, the camera's local time as `YYYY-MM-DDTHH:MM:SS` (EXIF gives no time zone for
//! these; the clock of the camera is what a user remembers). `lincir index` records it per image,
//! and searches can keep to a span of dates (`search --taken-from 2023-06 --taken-to 2023-08`).

use std::io::BufReader;
use std::path::Path;

/// Containers whose EXIF block sits in the header, found without reading the whole file.
const EXIF_IN_HEADER: [&str; 7] = ["jpg", "jpeg", "jpe", "png", "webp", "heic", "heif"];
/// TIFF files, whose tags may be anywhere in them: the EXIF reader reads the whole file, so only
/// files up to [`MAX_TIFF_BYTES`] get their date read (a scan of a few hundred megabytes, none).
const TIFF: [&str; 2] = ["tif", "tiff"];
const MAX_TIFF_BYTES: u64 = 64 << 20;

/// The date `path` was taken, when its EXIF data says (None without EXIF, without a date, or
/// with a date that cannot be one, as cameras write `0000:00:00 00:00:00` when never set).
pub fn taken(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let tiff = TIFF.contains(&ext.as_str());
    if !EXIF_IN_HEADER.contains(&ext.as_str()) && !tiff {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    if tiff && file.metadata().ok()?.len() > MAX_TIFF_BYTES {
        return None;
    }
    // A parser of untrusted bytes: a panic inside it costs this photo its date, nothing more.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let exif = exif::Reader::new().read_from_container(&mut BufReader::new(file)).ok()?;
        [exif::Tag::DateTimeOriginal, exif::Tag::DateTimeDigitized, exif::Tag::DateTime].into_iter().find_map(|tag| {
            match &exif.get_field(tag, exif::In::PRIMARY)?.value {
                exif::Value::Ascii(v) => v.first().and_then(|b| exif::DateTime::from_ascii(b).ok()).and_then(|d| format(&d)),
                _ => None,
            }
        })
    }))
    .ok()
    .flatten()
}

fn format(d: &exif::DateTime) -> Option<String> {
    let valid = (1826..=2200).contains(&d.year)
        && (1..=12).contains(&d.month)
        && (1..=31).contains(&d.day)
        && d.hour < 24
        && d.minute < 60
        && d.second <= 60;
    valid.then(|| format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", d.year, d.month, d.day, d.hour, d.minute, d.second.min(59)))
}

/// A bound of a span of dates as a user writes it: `2023`, `2023-07`, `2023-07-14`,
/// `2023-07-14T18:03` or `2023-07-14T18:03:22` (a space for the `T` too), normalised.
pub fn parse_bound(text: &str) -> Result<String, String> {
    let s = text.trim().replacen(' ', "T", 1);
    const SHAPE: &[u8] = b"0000-00-00T00:00:00";
    let shaped = [4, 7, 10, 16, 19].contains(&s.len())
        && s.bytes().zip(SHAPE).all(|(c, &t)| if t == b'0' { c.is_ascii_digit() } else { c == t });
    let number = |at: usize| s.get(at..at + 2).and_then(|n| n.parse::<u32>().ok());
    let in_range = |at: usize, range: std::ops::RangeInclusive<u32>| number(at).is_none_or(|n| range.contains(&n));
    let valid = shaped && in_range(5, 1..=12) && in_range(8, 1..=31) && in_range(11, 0..=23) && in_range(14, 0..=59) && in_range(17, 0..=59);
    if !valid {
        return Err(format!("`{}` is not a date: write 2023, 2023-07, 2023-07-14 or 2023-07-14T18:03", text.trim()));
    }
    Ok(s)
}

/// Whether a photo taken at `taken` (`YYYY-MM-DDTHH:MM:SS`) is within `from` and `to`, both
/// included at the precision they are written in: `to` = `2023-08` includes all of August.
pub fn within(taken: &str, from: Option<&str>, to: Option<&str>) -> bool {
    from.is_none_or(|f| taken >= f) && to.is_none_or(|t| taken.get(..t.len()).is_some_and(|p| p <= t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a JPEG whose EXIF DateTimeOriginal is `date` (EXIF's `YYYY:MM:DD HH:MM:SS`).
    pub fn jpeg_taken(path: &Path, date: &str) {
        let field = exif::Field { tag: exif::Tag::DateTimeOriginal, ifd_num: exif::In::PRIMARY, value: exif::Value::Ascii(vec![date.as_bytes().to_vec()]) };
        let mut writer = exif::experimental::Writer::new();
        writer.push_field(&field);
        let mut tiff = std::io::Cursor::new(Vec::new());
        writer.write(&mut tiff, false).unwrap();
        let mut bytes = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new(&mut bytes);
        image::ImageEncoder::set_exif_metadata(&mut encoder, tiff.into_inner()).unwrap();
        encoder.encode_image(&image::RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 30]))).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_date_a_photo_was_taken_is_read_from_its_exif() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("IMG_0001.JPG");
        jpeg_taken(&photo, "2023:07:14 18:03:22");
        assert_eq!(taken(&photo).as_deref(), Some("2023-07-14T18:03:22"));
        // Never set on the camera, no EXIF at all, not an image: no date.
        jpeg_taken(&photo, "0000:00:00 00:00:00");
        assert_eq!(taken(&photo), None);
        image::RgbImage::new(8, 8).save(dir.path().join("plain.jpg")).unwrap();
        assert_eq!(taken(&dir.path().join("plain.jpg")), None);
        std::fs::write(dir.path().join("text.jpg"), b"not a photo").unwrap();
        assert_eq!(taken(&dir.path().join("text.jpg")), None);
        assert_eq!(taken(&dir.path().join("missing.jpg")), None);
    }

    /// TIFF files (scans, some cameras): their tags may be anywhere in the file, so it is read
    /// whole, and only up to 64 MiB.
    #[test]
    fn a_tiff_gets_its_date_up_to_a_size() {
        let field = exif::Field { tag: exif::Tag::DateTimeOriginal, ifd_num: exif::In::PRIMARY, value: exif::Value::Ascii(vec![b"2001:02:03 04:05:06".to_vec()]) };
        let mut writer = exif::experimental::Writer::new();
        writer.push_field(&field);
        let mut tiff = std::io::Cursor::new(Vec::new());
        writer.write(&mut tiff, true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let scan = dir.path().join("scan.TIF");
        std::fs::write(&scan, tiff.get_ref()).unwrap();
        assert_eq!(taken(&scan).as_deref(), Some("2001-02-03T04:05:06"));
        // Past the size (a sparse file: nothing written): not read.
        std::fs::OpenOptions::new().write(true).open(&scan).unwrap().set_len(MAX_TIFF_BYTES + 1).unwrap();
        assert_eq!(taken(&scan), None);
    }

    #[test]
    fn bounds_are_dates_at_any_precision() {
        for (text, want) in [("2023", "2023"), ("2023-07", "2023-07"), (" 2023-07-14 ", "2023-07-14"), ("2023-07-14 18:03", "2023-07-14T18:03"), ("2023-07-14T18:03:22", "2023-07-14T18:03:22")] {
            assert_eq!(parse_bound(text).as_deref(), Ok(want), "{text}");
        }
        for text in ["", "23", "2023-7", "2023-13", "2023-00-10", "2023-07-32", "2023-07-14T24:00", "2023/07/14", "2023-07-14T18", "yesterday", "2023-07-14T18:03:22Z"] {
            assert!(parse_bound(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_span_includes_its_bounds_at_their_precision() {
        let t = "2023-08-31T23:59:59";
        assert!(within(t, Some("2023"), Some("2023")));
        assert!(within(t, Some("2023-08-31"), Some("2023-08")));
        assert!(within(t, Some("2023-08-31T23:59:59"), Some("2023-08-31T23:59:59")));
        assert!(!within(t, Some("2023-09"), None));
        assert!(!within(t, None, Some("2023-08-30")));
        assert!(!within(t, None, Some("2022")));
        assert!(within(t, None, None));
    }
}
