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

/// Units masked per block of random words (1 KB on the stack).
const MASK_BLOCK: usize = 256;

/// Applies an inverted-dropout mask in place: each unit is kept with probability `keep`
/// and then scaled by `1/keep` (so evaluation needs no rescaling), or zeroed.
///
/// The same mask is applied to `deriv` (if given) so backpropagation sees it. One `u32` is drawn
/// per unit, in row-major order, compared against `keep * 2^32`. `keep >= 1` draws nothing.
pub fn apply_mask<T: Float>(
    out: &mut [T],
    mut deriv: Option<&mut [T]>,
    keep: f64,
    rng: &mut ChaCha8Rng,
) {
    if keep >= 1.0 {
        return;
    }
    // The draws come in blocks: same words in the same order as one draw per unit.
    let mut bits = [0u32; MASK_BLOCK];
    // With `deriv`, the mask covers the units both slices have.
    let n = deriv
        .as_deref()
        .map_or(out.len(), |d| d.len().min(out.len()));
    for (k, o) in out[..n].chunks_mut(MASK_BLOCK).enumerate() {
        let bits = &mut bits[..o.len()];
        rng.fill(bits);
        let start = k * MASK_BLOCK;
        let d = deriv
            .as_deref_mut()
            .and_then(|d| d.get_mut(start..start + o.len()));
        apply_mask_words(o, d, bits, keep);
    }
}

/// Fills `words` with the random words of a dropout mask, one per unit in row-major order
/// (the words [`apply_mask`] would draw for as many units).
pub(crate) fn draw_mask_words(words: &mut [u32], rng: &mut ChaCha8Rng) {
    rng.fill(words);
}

/// Applies the mask given by `words` (one per unit of `out`, as [`draw_mask_words`] drew them)
/// to `out` and `deriv` (if given): a unit is kept and scaled by `1/keep` when its word is below
/// `keep * 2^32`, else zeroed. Branch-free selects: a branch per unit on a random bit would
/// mispredict half the time. `keep >= 1` changes nothing.
pub(crate) fn apply_mask_words<T: Float>(
    out: &mut [T],
    deriv: Option<&mut [T]>,
    words: &[u32],
    keep: f64,
) {
    if keep >= 1.0 {
        return;
    }
    // keep in (0, 1): the threshold is < 2^32, so a draw is kept when it is below it.
    let threshold = (keep * 4_294_967_296.0) as u32;
    let scale = T::from_f64(1.0 / keep);
    pulp::Arch::new().dispatch(MaskWords {
        out,
        deriv,
        words,
        threshold,
        scale,
    });
}

/// The loop of [`apply_mask_words`], compiled for the CPU's widest vectors through pulp (the
/// loop sits in `with_simd` itself: a closure handed to `dispatch` may be compiled out of line
/// for baseline x86-64).
struct MaskWords<'a, T> {
    out: &'a mut [T],
    deriv: Option<&'a mut [T]>,
    words: &'a [u32],
    threshold: u32,
    scale: T,
}

impl<T: Float> pulp::WithSimd for MaskWords<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::from_f64(0.0);
        let (threshold, scale) = (self.threshold, self.scale);
        match self.deriv {
            Some(deriv) => {
                for ((o, d), &b) in self.out.iter_mut().zip(deriv.iter_mut()).zip(self.words) {
                    let kept = b < threshold;
                    *o = if kept { *o * scale } else { zero };
                    *d = if kept { *d * scale } else { zero };
                }
            }
            None => {
                for (o, &b) in self.out.iter_mut().zip(self.words) {
                    *o = if b < threshold { *o * scale } else { zero };
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
        // 300 words were drawn: the stream continues at the 301st.
        let mut reference = ChaCha8Rng::seed_from_u64(9);
        let mut skip = [0u32; 300];
        reference.fill(&mut skip[..]);
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

    /// The mask is one `u32` per unit in order, exactly as drawing them one at a time.
    #[test]
    fn block_draws_match_one_draw_per_unit() {
        for len in [1usize, 255, 256, 257, 1000] {
            let mut rng = ChaCha8Rng::seed_from_u64(8);
            let mut out: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
            let mut deriv = vec![1.0f32; len];
            apply_mask(&mut out, Some(&mut deriv), 0.4, &mut rng);
            let mut hidden: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
            apply_mask(&mut hidden, None, 0.4, &mut rng);

            let mut reference = ChaCha8Rng::seed_from_u64(8);
            let threshold = (0.4f64 * 4_294_967_296.0) as u64;
            let mut expect = |v: f32| {
                if u64::from(reference.random::<u32>()) < threshold {
                    v * (1.0 / 0.4f64) as f32
                } else {
                    0.0
                }
            };
            for (i, (o, d)) in out.iter().zip(&deriv).enumerate() {
                let e = expect(i as f32 + 0.5);
                assert_eq!(*o, e);
                assert_eq!(*d, if e == 0.0 { 0.0 } else { 2.5 });
            }
            for (i, h) in hidden.iter().enumerate() {
                assert_eq!(*h, expect(i as f32 + 0.5), "len {len}, unit {i}");
            }
            assert_eq!(RngState::capture(&rng), RngState::capture(&reference));
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
