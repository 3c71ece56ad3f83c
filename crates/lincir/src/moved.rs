//! Photos moved to another folder of an index: `mv` (and `rsync -a`, a file manager's move) keeps
//! a file's name, size and modification time, so a new path whose file has the name, size and
//! time, to the nanosecond where the file system keeps them, of an indexed path that is gone is
//! that photo. `lincir index` then keeps its vector, date and id instead of embedding it again:
//! reorganising a library into new folders costs nothing. Renamed files are not recognised (the
//! name is part of the evidence: BMPs of one size extracted from one archive share size and time).

use crate::index::Entry;
use std::collections::HashMap;

/// The indexed entries whose paths are gone, by (file name, size, time).
pub struct Gone {
    by_key: HashMap<(String, u64, u128), Vec<Entry>>,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Gone {
    pub fn new<'a>(entries: impl Iterator<Item = &'a Entry>) -> Self {
        let mut by_key: HashMap<(String, u64, u128), Vec<Entry>> = HashMap::new();
        for e in entries {
            by_key.entry((file_name(&e.path).to_string(), e.size, e.mtime_ns)).or_default().push(e.clone());
        }
        // Several gone entries with one key (copies of one photo): taken in path order.
        for v in by_key.values_mut() {
            v.sort_by(|a, b| b.path.cmp(&a.path));
        }
        Gone { by_key }
    }

    /// The gone entry that the file now at `path` (with `size` and `mtime_ns`) is, moved there:
    /// its path set to `path`, everything else kept. Each gone entry is taken once.
    pub fn take(&mut self, path: &str, size: u64, mtime_ns: u128) -> Option<Entry> {
        let found = self.by_key.get_mut(&(file_name(path).to_string(), size, mtime_ns))?.pop()?;
        Some(Entry { path: path.to_string(), ..found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, id: usize, size: u64, mtime_ns: u128) -> Entry {
        Entry { path: path.into(), id, size, mtime_ns, row: id * 10, norm: 1.5, taken: Some("2023-07-14T18:03:00".into()) }
    }

    #[test]
    fn a_moved_photo_keeps_its_row_id_and_date_and_only_an_exact_match_counts() {
        let gone = [entry("2023/a.jpg", 1, 100, 7), entry("2023/b.jpg", 2, 200, 8), entry("x/c.jpg", 3, 300, 9), entry("y/c.jpg", 4, 300, 9)];
        let mut g = Gone::new(gone.iter());
        let moved = g.take("archive/2023/a.jpg", 100, 7).unwrap();
        assert_eq!((moved.path.as_str(), moved.id, moved.row, moved.taken.as_deref()), ("archive/2023/a.jpg", 1, 10, Some("2023-07-14T18:03:00")));
        // Taken once.
        assert!(g.take("other/a.jpg", 100, 7).is_none());
        // Another name, size or time: another photo.
        assert!(g.take("archive/renamed.jpg", 200, 8).is_none());
        assert!(g.take("archive/b.jpg", 201, 8).is_none());
        assert!(g.take("archive/b.jpg", 200, 9).is_none());
        assert_eq!(g.take("archive/b.jpg", 200, 8).map(|e| e.id), Some(2));
        // Copies with one key: in path order.
        assert_eq!(g.take("z/c.jpg", 300, 9).map(|e| e.id), Some(3));
        assert_eq!(g.take("w/c.jpg", 300, 9).map(|e| e.id), Some(4));
    }
}
