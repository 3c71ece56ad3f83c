//! Photos moved or renamed within an index's folder. `mv` (and `rsync -a`, a file manager's move,
//! a renaming tool such as exiftool's) keeps a file's size and modification time, so a new path
//! whose file has the size and time, to the nanosecond where the file system keeps them, of an
//! indexed path that is gone is that photo when one more piece of evidence agrees:
//!
//! - its file name (moved to another folder), or
//! - its content: the digest of its bytes ([`content_digest`], recorded for every photo embedded
//!   since 2026-12-02) equals the gone photo's (renamed). Size and time alone are not enough:
//!   BMPs of one size extracted from one archive share both.
//!
//! `lincir index` then keeps its vector, date and id instead of embedding it again: reorganising
//! or renaming a library costs no embedding.

use crate::index::Entry;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

/// The xxh3 digest (128 bits, hex) of a file's bytes; None when it cannot be read. Not a
/// cryptographic hash: it tells a user's own photos apart, it is not meant to resist forgery.
pub fn content_digest(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = twox_hash::XxHash3_128::new();
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.write(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(format!("{:032x}", hasher.finish_128()))
}

/// The indexed entries whose paths are gone, found again by (file name, size, time) or by
/// (size, time, content digest). Each is taken once, by whichever comes first.
pub struct Gone {
    entries: Vec<Option<Entry>>,
    by_name: HashMap<(String, u64, u128), Vec<usize>>,
    by_content: HashMap<(u64, u128, String), Vec<usize>>,
    /// The (size, time) of the entries in `by_content`.
    stamps_with_digest: HashSet<(u64, u128)>,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Gone {
    pub fn new<'a>(entries: impl Iterator<Item = &'a Entry>) -> Self {
        let mut entries: Vec<Entry> = entries.cloned().collect();
        // Several gone entries with one key (copies of one photo): taken in path order.
        entries.sort_by(|a, b| b.path.cmp(&a.path));
        let (mut by_name, mut by_content): (HashMap<_, Vec<usize>>, HashMap<_, Vec<usize>>) = Default::default();
        let mut stamps_with_digest = HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            by_name.entry((file_name(&e.path).to_string(), e.size, e.mtime_ns)).or_default().push(i);
            if let Some(digest) = &e.digest {
                by_content.entry((e.size, e.mtime_ns, digest.clone())).or_default().push(i);
                stamps_with_digest.insert((e.size, e.mtime_ns));
            }
        }
        Gone { entries: entries.into_iter().map(Some).collect(), by_name, by_content, stamps_with_digest }
    }

    /// The gone entry that the file now at `path` (with `size` and `mtime_ns`) is, moved there:
    /// its path set to `path`, everything else kept.
    pub fn take(&mut self, path: &str, size: u64, mtime_ns: u128) -> Option<Entry> {
        let found = Self::first(&mut self.entries, self.by_name.get_mut(&(file_name(path).to_string(), size, mtime_ns))?)?;
        Some(Entry { path: path.to_string(), ..found })
    }

    /// Whether a gone entry with this size and time has a digest to compare with (only then is
    /// a new file's content worth reading).
    pub fn may_be_renamed(&self, size: u64, mtime_ns: u128) -> bool {
        self.stamps_with_digest.contains(&(size, mtime_ns))
    }

    /// The gone entry that the file now at `path`, with this size, time and content digest, is,
    /// renamed (and perhaps moved): its path set to `path`, everything else kept.
    pub fn take_renamed(&mut self, path: &str, size: u64, mtime_ns: u128, digest: &str) -> Option<Entry> {
        let found = Self::first(&mut self.entries, self.by_content.get_mut(&(size, mtime_ns, digest.to_string()))?)?;
        Some(Entry { path: path.to_string(), ..found })
    }

    /// The first of `candidates` not taken yet, taken.
    fn first(entries: &mut [Option<Entry>], candidates: &mut Vec<usize>) -> Option<Entry> {
        while let Some(i) = candidates.pop() {
            if let Some(e) = entries[i].take() {
                return Some(e);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, id: usize, size: u64, mtime_ns: u128) -> Entry {
        Entry { path: path.into(), id, size, mtime_ns, row: id * 10, norm: 1.5, taken: Some("2023-07-14T18:03:00".into()), digest: Some(format!("{id:032x}")) }
    }

    #[test]
    fn a_moved_photo_keeps_its_row_id_and_date_and_only_an_exact_match_counts() {
        let gone = [entry("2023/a.jpg", 1, 100, 7), entry("2023/b.jpg", 2, 200, 8), entry("x/c.jpg", 3, 300, 9), entry("y/c.jpg", 4, 300, 9)];
        let mut g = Gone::new(gone.iter());
        let moved = g.take("archive/2023/a.jpg", 100, 7).unwrap();
        assert_eq!((moved.path.as_str(), moved.id, moved.row, moved.taken.as_deref()), ("archive/2023/a.jpg", 1, 10, Some("2023-07-14T18:03:00")));
        // Taken once.
        assert!(g.take("other/a.jpg", 100, 7).is_none());
        // Another name, size or time: another photo (by name; the content is the next test's).
        assert!(g.take("archive/renamed.jpg", 200, 8).is_none());
        assert!(g.take("archive/b.jpg", 201, 8).is_none());
        assert!(g.take("archive/b.jpg", 200, 9).is_none());
        assert_eq!(g.take("archive/b.jpg", 200, 8).map(|e| e.id), Some(2));
        // Copies with one key: in path order.
        assert_eq!(g.take("z/c.jpg", 300, 9).map(|e| e.id), Some(3));
        assert_eq!(g.take("w/c.jpg", 300, 9).map(|e| e.id), Some(4));
    }

    #[test]
    fn a_renamed_photo_is_found_by_its_content_and_only_with_its_size_and_time() {
        let mut without_digest = entry("old/d.jpg", 5, 500, 11);
        without_digest.digest = None;
        let gone = [entry("2023/a.jpg", 1, 100, 7), entry("2023/b.jpg", 2, 100, 7), without_digest];
        let mut g = Gone::new(gone.iter());
        let digest = |id: usize| format!("{id:032x}");
        assert!(g.may_be_renamed(100, 7));
        assert!(!g.may_be_renamed(100, 8) && !g.may_be_renamed(101, 7));
        // An entry indexed before digests were recorded is found by name only.
        assert!(!g.may_be_renamed(500, 11));
        assert_eq!(g.take("new/e.jpg", 500, 11).map(|e| e.id), None);
        assert_eq!(g.take("new/d.jpg", 500, 11).map(|e| e.id), Some(5));
        // Same size and time, another content: another photo.
        assert!(g.take_renamed("2024-07-14 18.03.00.jpg", 100, 7, &digest(9)).is_none());
        // The content, with the size and time: that photo, renamed (and moved), all else kept.
        let renamed = g.take_renamed("2024/2023-07-14 18.03.00.jpg", 100, 7, &digest(2)).unwrap();
        assert_eq!((renamed.path.as_str(), renamed.id, renamed.row, renamed.digest), ("2024/2023-07-14 18.03.00.jpg", 2, 20, Some(digest(2))));
        assert!(g.take_renamed("2024/x.jpg", 100, 7, &digest(2)).is_none());
        assert!(g.take_renamed("2024/a.jpg", 100, 8, &digest(1)).is_none());
        // Taken by name, then not again by content.
        assert_eq!(g.take("2025/a.jpg", 100, 7).map(|e| e.id), Some(1));
        assert!(g.take_renamed("2025/y.jpg", 100, 7, &digest(1)).is_none());
    }

    #[test]
    fn the_content_digest_reads_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        // Two files that differ only past the first read buffer.
        let mut bytes = vec![7u8; 700_000];
        std::fs::write(&a, &bytes).unwrap();
        bytes[600_000] = 8;
        std::fs::write(&b, &bytes).unwrap();
        let (da, db) = (content_digest(&a).unwrap(), content_digest(&b).unwrap());
        assert_eq!(da.len(), 32);
        assert_ne!(da, db);
        assert_eq!(content_digest(&a).unwrap(), da);
        assert_eq!(content_digest(&dir.path().join("missing")), None);
    }
}
