//! The official metrics, as percentages, on rankings given as score rows.
//!
//! Rankings sort by descending score; ties keep gallery order (a stable sort), so the numbers are
//! deterministic where the official code's `argsort` leaves the order of equal scores unspecified.

/// Gallery indices by descending score, ties in index order.
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// 0-based rank of `target` among `candidates` (indices into `scores`), skipping `excluded`.
/// Equal scores rank by candidate order, as [`ranking`]. `None` if the target is not a candidate.
pub fn rank_of(scores: &[f32], candidates: &[usize], target: usize, excluded: Option<usize>) -> Option<usize> {
    if !candidates.contains(&target) || Some(target) == excluded {
        return None;
    }
    let pos = |i: usize| candidates.iter().position(|&c| c == i).unwrap();
    let t = scores[target];
    let before = candidates
        .iter()
        .filter(|&&c| Some(c) != excluded && c != target)
        .filter(|&&c| scores[c] > t || (scores[c] == t && pos(c) < pos(target)))
        .count();
    Some(before)
}

/// Percentage of ranks below k (a rank of `None`, a target that cannot be found, counts as a miss).
pub fn recall_at(ranks: &[Option<usize>], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    100.0 * ranks.iter().filter(|r| r.is_some_and(|r| r < k)).count() as f64 / ranks.len() as f64
}

/// CIRCO's average precision at k: the sum of precision@i over the hits i within the top k,
/// divided by min(#ground truths, k).
pub fn average_precision_at(top: &[usize], ground_truth: &[usize], k: usize) -> f64 {
    if ground_truth.is_empty() {
        return 0.0;
    }
    let mut hits = 0;
    let mut sum = 0.0;
    for (i, id) in top.iter().take(k).enumerate() {
        if ground_truth.contains(id) {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    100.0 * sum / ground_truth.len().min(k) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_strictly_better_and_earlier_ties() {
        let s = [0.5, 0.9, 0.5, 0.1];
        assert_eq!(ranking(&s), vec![1, 0, 2, 3]);
        let all = [0, 1, 2, 3];
        assert_eq!(rank_of(&s, &all, 1, None), Some(0), "the best ranks first");
        assert_eq!(rank_of(&s, &all, 2, None), Some(2), "a tie ranks after the earlier candidate");
        assert_eq!(rank_of(&s, &all, 2, Some(1)), Some(1), "the excluded reference does not count");
        assert_eq!(rank_of(&s, &all, 1, Some(1)), None, "the reference itself cannot be the target");
        assert_eq!(rank_of(&s, &[3, 2], 2, None), Some(0), "restricted to a subset");
    }

    #[test]
    fn recall_is_a_percentage_of_hits() {
        let ranks = [Some(0), Some(4), Some(5), None];
        assert_eq!(recall_at(&ranks, 1), 25.0);
        assert_eq!(recall_at(&ranks, 5), 50.0);
        assert_eq!(recall_at(&ranks, 50), 75.0);
    }

    #[test]
    fn average_precision_handles_several_and_few_ground_truths() {
        // hits at positions 1 and 3: (1/1 + 2/3) / min(2, 5)
        assert!((average_precision_at(&[7, 1, 8, 2, 3], &[7, 8], 5) - 100.0 * (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-9);
        // more ground truths than k: divide by k
        assert!((average_precision_at(&[1, 2], &[1, 2, 3, 4], 2) - 100.0).abs() < 1e-9);
        // a hit beyond k does not count
        assert_eq!(average_precision_at(&[5, 6, 1], &[1], 2), 0.0);
    }
}
