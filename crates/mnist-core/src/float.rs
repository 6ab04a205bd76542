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

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn from_f64(v: f64) -> Self;
    /// Widens (or copies) to `f64`; exact.
    fn to_f64(self) -> f64;
    /// `e^self`.
    fn exp(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `self * a + b` with one rounding (a fused multiply-add where the CPU has one; the
    /// kernels call it only inside code compiled for FMA).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The IEEE bit pattern widened to `u64`, for bit-exact comparisons.
    fn to_bits_u64(self) -> u64;
    /// Appends the little-endian bytes of `self`.
    fn extend_le_bytes(self, out: &mut Vec<u8>);
    /// Reads one value from exactly [`Self::BYTES`] little-endian bytes; `None` on a wrong length.
    fn from_le_chunk(chunk: &[u8]) -> Option<Self>;
}

macro_rules! impl_float {
    ($t:ty, $dtype:ident) => {
        impl Float for $t {
            const DTYPE: safetensors::Dtype = safetensors::Dtype::$dtype;
            const BYTES: usize = core::mem::size_of::<$t>();

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
        }
    };
}

impl_float!(f32, F32);
impl_float!(f64, F64);
