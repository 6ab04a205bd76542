//! Seeded ways to choose which examples go where. Every function is a pure function of its
//! inputs and the seed (ChaCha8), so a run can be repeated exactly.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{DatasetError, Result};
use crate::files::NUM_CLASSES;

/// Shuffles `0..n` with `seed`, then returns `(first, rest)`: the first `first` indices of
/// that order and the remaining ones. The reference "dev = first 10,000 of a seeded
/// shuffle, train = the other 50,000" is `shuffled_split(60_000, 10_000, seed)`.
pub fn shuffled_split(n: usize, first: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if first > n {
        return Err(DatasetError::InvalidSplit(format!(
            "cannot take {first} examples out of {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let rest = order.split_off(first);
    Ok((order, rest))
}

/// Disjoint class-balanced subsets: subset `s` holds `per_class[s]` examples of every digit.
/// Within each subset the order is shuffled (classes interleaved).
///
/// The one-hidden-relu reference (500 per digit for training, 100 for validation) is
/// `balanced_subsets(labels, &[500, 100], seed)`.
pub fn balanced_subsets(labels: &[u8], per_class: &[usize], seed: u64) -> Result<Vec<Vec<usize>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); NUM_CLASSES];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(class) = by_class.get_mut(usize::from(l)) {
            class.push(i);
        }
    }
    let needed: usize = per_class.iter().sum();
    let mut subsets: Vec<Vec<usize>> = per_class
        .iter()
        .map(|&k| Vec::with_capacity(k * NUM_CLASSES))
        .collect();
    for (digit, members) in by_class.iter_mut().enumerate() {
        if members.len() < needed {
            return Err(DatasetError::InvalidSplit(format!(
                "digit {digit} has {} examples, the subsets need {needed} of each",
                members.len()
            )));
        }
        members.shuffle(&mut rng);
        let mut taken = members.iter();
        for (subset, &k) in subsets.iter_mut().zip(per_class) {
            subset.extend(taken.by_ref().take(k));
        }
    }
    for subset in &mut subsets {
        subset.shuffle(&mut rng);
    }
    Ok(subsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn shuffled_split_is_a_seeded_partition() {
        let (a, b) = shuffled_split(100, 30, 7).unwrap();
        assert_eq!((a.len(), b.len()), (30, 70));
        let all: HashSet<_> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 100);
        assert_eq!(
            shuffled_split(100, 30, 7).unwrap().0,
            a,
            "same seed, same split"
        );
        assert_ne!(
            shuffled_split(100, 30, 8).unwrap().0,
            a,
            "other seed, other split"
        );
        assert!(shuffled_split(10, 11, 0).is_err());
    }

    #[test]
    fn balanced_subsets_are_disjoint_and_balanced() {
        let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
        let subsets = balanced_subsets(&labels, &[5, 3], 42).unwrap();
        assert_eq!(subsets[0].len(), 50);
        assert_eq!(subsets[1].len(), 30);
        for (subset, k) in subsets.iter().zip([5, 3]) {
            let mut counts = [0; 10];
            subset
                .iter()
                .for_each(|&i| counts[usize::from(labels[i])] += 1);
            assert_eq!(counts, [k; 10]);
        }
        let a: HashSet<_> = subsets[0].iter().collect();
        assert!(subsets[1].iter().all(|i| !a.contains(i)));
        assert!(balanced_subsets(&labels, &[90, 20], 0).is_err());
    }
}
