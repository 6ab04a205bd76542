//! Inverted dropout and the capturable RNG state that drives it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::Float;

/// The complete state of a [`ChaCha8Rng`] as plain data, so a checkpoint can resume the exact
/// random stream (dropout masks, shuffles).
///
/// `word_pos` is a `u128` and is serialized as a decimal string so that every JSON reader
/// keeps it exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// Position in the stream, in 32-bit words.
    #[serde(with = "u128_string")]
    pub word_pos: u128,
}

impl RngState {
    /// Captures `rng`'s state.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// Rebuilds an RNG that continues exactly where the captured one was.
    pub fn restore(&self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Applies an inverted-dropout mask in place: each unit is kept with probability `keep`
/// and then scaled by `1/keep` (so evaluation needs no rescaling), or zeroed.
///
/// The same mask is applied to `deriv` (if given) so backpropagation sees it. The mask is
/// [`MaskKey::draw`]n from `rng` (two words, whatever the length) and unit `i` is kept when
/// its [`MaskKey::word`] is below `keep * 2^32`. `keep >= 1` draws nothing.
pub fn apply_mask<T: Float>(
    out: &mut [T],
    deriv: Option<&mut [T]>,
    keep: f64,
    rng: &mut ChaCha8Rng,
) {
    if keep >= 1.0 {
        return;
    }
    let key = MaskKey::draw(rng);
    apply_keyed_mask(out, deriv, key, 0, keep);
}

/// The key of one dropout mask (one layer, one batch): unit `i`'s random word is a hash of `i`
/// under the key, so any range of units can be masked on any thread, in any order, and give
/// the same mask, with no buffer of random words.
///
/// Why not a `u32` per unit from the ChaCha stream: drawing them cost more than the rest of
/// the dropout pass, about 8% of an adam-dropout epoch on one thread. The key comes from the
/// stream, so a checkpoint's [`RngState`] still resumes the exact masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskKey([u32; 2]);

impl MaskKey {
    /// The next key of `rng`'s stream (two `u32` words).
    pub fn draw(rng: &mut ChaCha8Rng) -> Self {
        Self([rng.random(), rng.random()])
    }

    /// Unit `i`'s word: two rounds of the `lowbias32` integer hash (C. Wellons' hash-prospector,
    /// a bijection of `u32` with near-ideal avalanche), each after mixing in half of the key.
    /// Indices are taken mod 2^32 (a layer's batch of 4 Gi units is beyond any use here).
    #[inline(always)]
    pub fn word(self, i: u32) -> u32 {
        lowbias32(lowbias32(i ^ self.0[0]) ^ self.0[1])
    }
}

#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Applies the mask of `key` to units `first..first + out.len()` (`out[j]` is unit `first +
/// j`) and `deriv` (if given; the mask then covers the units both slices have): a unit is kept
/// and scaled by `1/keep` when its word is below `keep * 2^32`, else zeroed. Branch-free
/// selects: a branch per unit on a random bit would mispredict half the time. `keep >= 1`
/// changes nothing.
pub(crate) fn apply_keyed_mask<T: Float>(
    out: &mut [T],
    deriv: Option<&mut [T]>,
    key: MaskKey,
    first: u64,
    keep: f64,
) {
    if keep >= 1.0 {
        return;
    }
    // keep in (0, 1): the threshold is < 2^32, so a draw is kept when it is below it.
    let threshold = (keep * 4_294_967_296.0) as u32;
    let scale = T::from_f64(1.0 / keep);
    pulp::Arch::new().dispatch(KeyedMask {
        out,
        deriv,
        key,
        // Indices are mod 2^32 (see `MaskKey::word`).
        first: first as u32,
        threshold,
        scale,
    });
}

/// The loop of [`apply_keyed_mask`], compiled for the CPU's widest vectors through pulp (the
/// loop sits in `with_simd` itself: a closure handed to `dispatch` may be compiled out of line
/// for baseline x86-64).
struct KeyedMask<'a, T> {
    out: &'a mut [T],
    deriv: Option<&'a mut [T]>,
    key: MaskKey,
    first: u32,
    threshold: u32,
    scale: T,
}

impl<T: Float> pulp::WithSimd for KeyedMask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::from_f64(0.0);
        let (key, first, threshold, scale) = (self.key, self.first, self.threshold, self.scale);
        let kept = |j: usize| key.word(first.wrapping_add(j as u32)) < threshold;
        match self.deriv {
            Some(deriv) => {
                for (j, (o, d)) in self.out.iter_mut().zip(deriv.iter_mut()).enumerate() {
                    let k = kept(j);
                    *o = if k { *o * scale } else { zero };
                    *d = if k { *d * scale } else { zero };
                }
            }
            None => {
                for (j, o) in self.out.iter_mut().enumerate() {
                    *o = if kept(j) { *o * scale } else { zero };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_deriv_limits_the_mask_to_the_units_both_have() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut out = vec![1.0f32; 600];
        let mut deriv = vec![1.0f32; 300];
        apply_mask(&mut out, Some(&mut deriv), 0.5, &mut rng);
        assert_eq!(&out[..300], &deriv[..], "out and deriv share the mask");
        assert!(
            out[300..].iter().all(|&v| v == 1.0),
            "units past deriv untouched"
        );
        // One key was drawn (two words): the stream continues at the third.
        let mut reference = ChaCha8Rng::seed_from_u64(9);
        let _ = MaskKey::draw(&mut reference);
        assert_eq!(rng.random::<u32>(), reference.random::<u32>());
    }

    #[test]
    fn rng_state_round_trips_through_json() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        rng.set_stream(3);
        for _ in 0..37 {
            let _: u32 = rng.random();
        }
        let state = RngState::capture(&rng);
        let json = serde_json::to_string(&state).unwrap();
        let back: RngState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        let mut restored = back.restore();
        for _ in 0..100 {
            assert_eq!(rng.random::<u64>(), restored.random::<u64>());
        }
    }

    /// A mask is a function of the key and the units' indices only: masking a range in pieces
    /// (as the threads do) equals masking it whole, and unit `i` is kept exactly when its word
    /// is below `keep * 2^32`.
    #[test]
    fn a_mask_split_anywhere_is_the_same_mask() {
        let key = MaskKey::draw(&mut ChaCha8Rng::seed_from_u64(8));
        let threshold = (0.4f64 * 4_294_967_296.0) as u32;
        for len in [1usize, 15, 16, 17, 255, 1000] {
            let values = |first: usize| -> Vec<f32> {
                (first..first + len).map(|i| i as f32 + 0.5).collect()
            };
            let mut whole = values(7);
            let mut whole_deriv = vec![1.0f32; len];
            apply_keyed_mask(&mut whole, Some(&mut whole_deriv), key, 7, 0.4);
            for cut in [0, 1, len / 3, len] {
                let mut pieces = values(7);
                let mut deriv = vec![1.0f32; len];
                let (a, b) = pieces.split_at_mut(cut);
                let (da, db) = deriv.split_at_mut(cut);
                apply_keyed_mask(b, Some(db), key, 7 + cut as u64, 0.4);
                apply_keyed_mask(a, Some(da), key, 7, 0.4);
                assert_eq!(pieces, whole, "len {len}, cut {cut}");
                assert_eq!(deriv, whole_deriv, "len {len}, cut {cut}");
            }
            for (j, (o, d)) in whole.iter().zip(&whole_deriv).enumerate() {
                let kept = key.word(7 + j as u32) < threshold;
                let v = (7 + j) as f32 + 0.5;
                assert_eq!(*o, if kept { v * 2.5 } else { 0.0 });
                assert_eq!(*d, if kept { 2.5 } else { 0.0 });
            }
        }
    }

    /// The hashed words must behave like independent uniform draws for dropout: the kept
    /// fraction, the agreement of neighbouring units (within a row and a row apart), and
    /// masks under different keys, each within 5 standard deviations of a true Bernoulli mask.
    #[test]
    fn hashed_masks_look_like_independent_draws() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (n, width) = (1usize << 20, 400usize);
        for keep in [0.4f64, 0.5, 0.8] {
            let key = MaskKey::draw(&mut rng);
            let other = MaskKey::draw(&mut rng);
            let threshold = (keep * 4_294_967_296.0) as u32;
            let kept = |k: MaskKey, i: usize| k.word(i as u32) < threshold;
            let within = |count: usize, p: f64, what: &str| {
                let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
                assert!(
                    (count as f64 - mean).abs() < 5.0 * sd,
                    "keep {keep}, {what}: {count} against {mean:.0} +- {sd:.0}"
                );
            };
            within((0..n).filter(|&i| kept(key, i)).count(), keep, "kept");
            let agree = keep * keep + (1.0 - keep) * (1.0 - keep);
            for lag in [1usize, 2, width] {
                let same = (0..n)
                    .filter(|&i| kept(key, i) == kept(key, i + lag))
                    .count();
                within(same, agree, &format!("agreement at lag {lag}"));
            }
            let same = (0..n).filter(|&i| kept(key, i) == kept(other, i)).count();
            within(same, agree, "agreement across keys");
        }
    }

    #[test]
    fn mask_keeps_about_keep_and_scales() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut out = vec![1.0f64; 20_000];
        let mut deriv = vec![2.0f64; 20_000];
        apply_mask(&mut out, Some(&mut deriv), 0.8, &mut rng);
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f64 / 20_000.0;
        assert!((kept - 0.8).abs() < 0.01, "kept {kept}");
        for (o, d) in out.iter().zip(&deriv) {
            assert!((*o == 0.0 && *d == 0.0) || (*o == 1.25 && *d == 2.5));
        }
        let before = RngState::capture(&rng);
        apply_mask(&mut out, None, 1.0, &mut rng);
        assert_eq!(RngState::capture(&rng), before, "keep = 1 draws nothing");
    }
}
