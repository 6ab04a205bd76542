//! The scalar types the engine runs on: `f32` (training speed) and `f64` (gradient checks).

use core::fmt::{Debug, Display};
use core::ops::Neg;

use faer::traits::RealField;
use serde::Serialize;
use serde::de::DeserializeOwned;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A real scalar the network can be built on. Implemented for `f32` and `f64` only (sealed).
///
/// It is faer's [`RealField`] (so matrices of it can be multiplied) plus the few elementwise
/// functions the activations, losses and optimizers need.
pub trait Float:
    RealField
    + Copy
    + Default
    + PartialOrd
    + Neg<Output = Self>
    + Send
    + Sync
    + Debug
    + Display
    + Serialize
    + DeserializeOwned
    + 'static
    + sealed::Sealed
{
    /// The safetensors dtype of this scalar (`F32` or `F64`).
    const DTYPE: safetensors::Dtype;
    /// Size in bytes of one value.
    const BYTES: usize;
    /// Hidden sigmoid outputs, loss gradients and backpropagated deltas smaller than this in
    /// magnitude are set to exactly zero (2^-50 in `f32`, 2^-400 in `f64`; see
    /// [`Float::flush_tiny`]).
    const FLUSH_BELOW: Self;
    /// 64 times the smallest normal value (2^-120 in `f32`, 2^-1016 in `f64`): state that
    /// decays geometrically is set to zero below this, before it can turn subnormal (see the
    /// optimizer module).
    const NEAR_SUBNORMAL: Self;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn from_f64(v: f64) -> Self;
    /// Widens (or copies) to `f64`; exact.
    fn to_f64(self) -> f64;
    /// `e^self`.
    fn exp(self) -> Self;
    /// `e^self` for `self <= 0`, within a few ulp of [`Float::exp`], for the sigmoid and
    /// softmax passes: plain arithmetic without branches or calls, so loops over it vectorize.
    /// Arguments below `ln(MIN_POSITIVE)` give about `MIN_POSITIVE`; positive ones give 1; NaN stays
    /// NaN.
    fn exp_nonpositive(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `self`, or zero when `|self| <` [`Float::FLUSH_BELOW`] (NaN stays NaN).
    ///
    /// Why: a saturated sigmoid gives values near `MIN_POSITIVE`, a softmax gives
    /// probabilities as small, and their products in the next matrix product (or a gradient
    /// scaled by `1/batch`) are subnormal. On Intel cores a floating-point multiply or FMA
    /// with a subnormal operand or result takes a microcode assist of about a hundred cycles:
    /// two-layer-sigmoid (weights N(0, 1)) trained 10x slower on a Xeon than on a Zen core.
    /// Flushing such values is numerically negligible: each one is below half an ulp of any
    /// sum of terms of order 1e-7 or more, and a weight update of this size leaves any weight
    /// above ~1e-7 (f32) unchanged; only many of them together can move a last digit. The
    /// square of 2^-50 and its product with a weight of 2^-26 are still normal.
    fn flush_tiny(self) -> Self;
    /// `self * a + b` with one rounding (a fused multiply-add where the CPU has one; the
    /// kernels call it only inside code compiled for FMA).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The IEEE bit pattern widened to `u64`, for bit-exact comparisons.
    fn to_bits_u64(self) -> u64;
    /// Appends the little-endian bytes of `self`.
    fn extend_le_bytes(self, out: &mut Vec<u8>);
    /// Reads one value from exactly [`Self::BYTES`] little-endian bytes; `None` on a wrong length.
    fn from_le_chunk(chunk: &[u8]) -> Option<Self>;
    /// The slice as `f32` when `Self` is `f32` (for kernels written for one type only).
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]>;
    /// The mutable slice as `f32` when `Self` is `f32`.
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

macro_rules! impl_float {
    (
        $t:ty,
        $dtype:ident,
        $flush_below:expr,
        $exp_nonpositive:ident,
        $as_f32:ident,
        $as_f32_mut:ident
    ) => {
        impl Float for $t {
            const DTYPE: safetensors::Dtype = safetensors::Dtype::$dtype;
            const BYTES: usize = core::mem::size_of::<$t>();
            const FLUSH_BELOW: Self = $flush_below;
            const NEAR_SUBNORMAL: Self = <$t>::MIN_POSITIVE * 64.0;

            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn exp_nonpositive(self) -> Self {
                $exp_nonpositive(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn flush_tiny(self) -> Self {
                // Branch-free select, so loops over it vectorize.
                if self.abs() < $flush_below { 0.0 } else { self }
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn to_bits_u64(self) -> u64 {
                self.to_bits() as u64
            }
            fn extend_le_bytes(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le_chunk(chunk: &[u8]) -> Option<Self> {
                chunk.try_into().ok().map(<$t>::from_le_bytes)
            }
            #[inline(always)]
            fn as_f32_slice(s: &[Self]) -> Option<&[f32]> {
                $as_f32(s)
            }
            #[inline(always)]
            fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32_mut(s)
            }
        }
    };
}

// 2^-50 and 2^-400, written as bit patterns (exact).
impl_float!(
    f32,
    F32,
    f32::from_bits(0x2680_0000),
    exp_nonpositive_f32,
    some_f32,
    some_f32_mut
);
impl_float!(
    f64,
    F64,
    f64::from_bits(0x26f0_0000_0000_0000),
    exp_nonpositive_f64,
    no_f32,
    no_f32_mut
);

#[inline(always)]
fn some_f32(s: &[f32]) -> Option<&[f32]> {
    Some(s)
}
#[inline(always)]
fn some_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
    Some(s)
}
#[inline(always)]
fn no_f32(_: &[f64]) -> Option<&[f32]> {
    None
}
#[inline(always)]
fn no_f32_mut(_: &mut [f64]) -> Option<&mut [f32]> {
    None
}

// Cephes' exp and expf: x = k ln2 + r with |r| <= ln2 / 2 (ln2 split in two so k ln2 is
// exact), e^r from a polynomial (f32) or a Pade form (f64), and 2^k written into the exponent
// bits. The clamps are comparisons rather than min/max so that NaN passes through; no fused
// multiply-adds, so the result does not depend on the instruction set.

#[inline(always)]
fn exp_nonpositive_f32(x: f32) -> f32 {
    // Just above ln(f32::MIN_POSITIVE) (-87.3365448), so that the clamped result is still
    // normal: the f32 just below it gave 0.9999969 x 2^-126, a subnormal product whose
    // microcode assist (Intel) made every saturated sigmoid unit cost ~10x a normal one.
    const LN_MIN: f32 = -87.336_54;
    let x = if x < LN_MIN { LN_MIN } else { x };
    let x = if x > 0.0 { 0.0 } else { x };
    let k = (x * core::f32::consts::LOG2_E + 0.5).floor();
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    // k in [-126, 0]: a normal power of two. Adding 2^23 puts the integer k + 127 in the low
    // mantissa bits (exactly: the sum lies in [2^23, 2^24), one ulp apart); unlike `k as i32`,
    // whose saturation and NaN rules AVX-512 code computed one lane at a time.
    let biased = (k + (127.0 + 8_388_608.0)).to_bits() & 0x007f_ffff;
    e * f32::from_bits(biased << 23)
}

#[inline(always)]
fn exp_nonpositive_f64(x: f64) -> f64 {
    const LN_MIN: f64 = -708.396_418_532_264_1; // ln(f64::MIN_POSITIVE)
    let x = if x < LN_MIN { LN_MIN } else { x };
    let x = if x > 0.0 { 0.0 } else { x };
    let k = (x * core::f64::consts::LOG2_E + 0.5).floor();
    let r = x - k * 6.931_457_519_531_25e-1 - k * 1.428_606_820_309_417_2e-6;
    let rr = r * r;
    let px = r * ((1.261_771_930_748_105_9e-4 * rr + 3.029_944_077_074_419_6e-2) * rr + 1.0);
    let qx = ((3.001_985_051_386_644_5e-6 * rr + 2.524_483_403_496_841e-3) * rr
        + 2.272_655_482_081_550_3e-1)
        * rr
        + 2.0;
    let e = 1.0 + 2.0 * (px / (qx - px));
    // k in [-1022, 0]: a normal power of two, built as in the f32 version (2^52 this time).
    let biased = (k + (1023.0 + 4_503_599_627_370_496.0)).to_bits() & 0x000f_ffff_ffff_ffff;
    e * f64::from_bits(biased << 52)
}

#[cfg(test)]
mod tests {
    use super::Float;

    /// Relative error against the standard library's `exp`, over a dense grid of `[-lim, 0]`.
    fn max_rel_error<T: Float>(lim: f64, steps: usize) -> f64 {
        (0..=steps)
            .map(|i| T::from_f64(-lim * i as f64 / steps as f64))
            .map(|x| {
                let want = x.exp().to_f64();
                (x.exp_nonpositive().to_f64() - want).abs() / want
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn exp_nonpositive_matches_exp() {
        let f32_err = max_rel_error::<f32>(87.0, 200_000);
        assert!(f32_err < 4.0 * f32::EPSILON as f64, "f32: {f32_err:e}");
        let f64_err = max_rel_error::<f64>(708.0, 200_000);
        assert!(f64_err < 4.0 * f64::EPSILON, "f64: {f64_err:e}");
    }

    /// However negative the argument, the result is a normal number (a subnormal one would
    /// cost a microcode assist on Intel cores wherever it goes next).
    #[test]
    fn exp_nonpositive_never_returns_a_subnormal() {
        let mut x = -80.0f32;
        while x > -100.0 {
            let e = x.exp_nonpositive();
            assert!(e.is_normal(), "f32 at {x}: {e:e}");
            x -= 1.0 / 1024.0;
        }
        for x in [-87.336_55f32, -87.336_54, -1e4, f32::MIN, f32::NEG_INFINITY] {
            assert!(x.exp_nonpositive().is_normal(), "f32 at {x}");
        }
        for x in [-708.396_418_532_264_1f64, -709.0, -1e4, f64::NEG_INFINITY] {
            assert!(x.exp_nonpositive().is_normal(), "f64 at {x}");
        }
    }

    #[test]
    fn exp_nonpositive_edges() {
        assert_eq!(0.0f32.exp_nonpositive(), 1.0);
        assert_eq!(0.0f64.exp_nonpositive(), 1.0);
        assert_eq!(5.0f64.exp_nonpositive(), 1.0);
        let tiny = (-1e4f32).exp_nonpositive();
        assert!(tiny > 0.0 && tiny < 1.2e-38, "{tiny:e}");
        let tiny = (-1e4f64).exp_nonpositive();
        assert!(tiny > 0.0 && tiny < 2.3e-308, "{tiny:e}");
        assert!(f32::NAN.exp_nonpositive().is_nan());
        assert!(f64::NAN.exp_nonpositive().is_nan());
    }
}
