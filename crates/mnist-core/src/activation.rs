//! Hidden-layer activations and output heads, applied in place over row-major buffers.
//!
//! Training uses [`Activation::forward_with_derivative`], one fused pass that writes the
//! activation over the pre-activation and the derivative beside it, so backpropagation never
//! has to re-read the pre-activations.

use serde::{Deserialize, Serialize};

use crate::Float;

/// A hidden-layer activation function.
///
/// Serialized in snake case: `"identity"`, `"sigmoid"`, `"tanh"`, `"relu"`,
/// `{"leaky_relu": {"slope": 0.01}}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Activation {
    /// `f(z) = z`.
    Identity,
    /// `f(z) = 1 / (1 + e^-z)`, evaluated without overflow.
    Sigmoid,
    /// `f(z) = tanh(z)`.
    Tanh,
    /// `f(z) = max(0, z)`; the derivative at 0 is taken as 0.
    Relu,
    /// `f(z) = z` for `z > 0`, `slope * z` otherwise.
    LeakyRelu {
        /// Slope for negative inputs (e.g. 0.01).
        slope: f64,
    },
}

/// The function applied to the last layer's pre-activations (the logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputHead {
    /// Row-wise softmax (max-subtracted): each row is a probability distribution.
    Softmax,
    /// Elementwise logistic sigmoid: each output in (0, 1) independently.
    Sigmoid,
}

/// Logistic sigmoid that never overflows: with `e = e^-|z|` (an argument never positive),
/// `1 / (1 + e)` for `z >= 0` and `e / (1 + e)` below. Branch-free, so loops over it vectorize.
#[inline(always)]
pub fn sigmoid<T: Float>(z: T) -> T {
    let one = T::from_f64(1.0);
    let e = (-z.abs()).exp_nonpositive();
    let inv = one / (one + e);
    if z >= T::from_f64(0.0) { inv } else { e * inv }
}

/// The hidden-layer sigmoid: [`sigmoid`] with outputs below [`Float::FLUSH_BELOW`] (inputs
/// below -50 ln 2 = -34.66 in `f32`, -400 ln 2 = -277.3 in `f64`) set to exactly 0, so that
/// saturated units feed no subnormal products into the next layer (see
/// [`Float::flush_tiny`]). Output heads keep the plain [`sigmoid`]: their probabilities are
/// reported, and the loss gradient is flushed instead.
#[inline(always)]
pub(crate) fn hidden_sigmoid<T: Float>(z: T) -> T {
    sigmoid(z).flush_tiny()
}

/// `max(0, z)` as a branch-free select, so loops over it vectorize.
#[inline(always)]
fn relu<T: Float>(z: T) -> T {
    if z > T::from_f64(0.0) {
        z
    } else {
        T::from_f64(0.0)
    }
}

impl Activation {
    /// `f(z)` for one value.
    #[inline]
    pub fn apply<T: Float>(self, z: T) -> T {
        let zero = T::from_f64(0.0);
        match self {
            Self::Identity => z,
            Self::Sigmoid => hidden_sigmoid(z),
            Self::Tanh => z.tanh(),
            Self::Relu => relu(z),
            Self::LeakyRelu { slope } => {
                if z > zero {
                    z
                } else {
                    T::from_f64(slope) * z
                }
            }
        }
    }

    /// `f'(z)` for one value.
    #[inline]
    pub fn derivative<T: Float>(self, z: T) -> T {
        let zero = T::from_f64(0.0);
        let one = T::from_f64(1.0);
        match self {
            Self::Identity => one,
            Self::Sigmoid => {
                let s = hidden_sigmoid(z);
                s * (one - s)
            }
            Self::Tanh => {
                let t = z.tanh();
                one - t * t
            }
            Self::Relu => {
                if z > zero {
                    one
                } else {
                    zero
                }
            }
            Self::LeakyRelu { slope } => {
                if z > zero {
                    one
                } else {
                    T::from_f64(slope)
                }
            }
        }
    }

    /// Replaces each `z` in `buf` by `f(z)` (evaluation mode: no derivative kept).
    pub fn forward_in_place<T: Float>(self, buf: &mut [T]) {
        // One tight loop per variant: the match stays out of the hot loop.
        match self {
            Self::Identity => {}
            // Compiled for the CPU's widest vectors (AVX-512 / AVX2) through pulp.
            Self::Sigmoid => pulp::Arch::new().dispatch(SigmoidInPlace(buf)),
            Self::Tanh => buf.iter_mut().for_each(|v| *v = v.tanh()),
            // Branch-free selects, so the loops vectorize (same values as `apply`).
            Self::Relu => pulp::Arch::new().dispatch(ReluInPlace(buf)),
            Self::LeakyRelu { .. } => {
                buf.iter_mut().for_each(|v| *v = self.apply(*v));
            }
        }
    }

    /// Fused training pass: replaces each `z` in `buf` by `f(z)` and writes `f'(z)` into the
    /// same position of `deriv`. Both slices must have the same length (extra elements of the
    /// longer one are left untouched).
    pub fn forward_with_derivative<T: Float>(self, buf: &mut [T], deriv: &mut [T]) {
        let zero = T::from_f64(0.0);
        let one = T::from_f64(1.0);
        let pairs = buf.iter_mut().zip(deriv.iter_mut());
        match self {
            Self::Identity => pairs.for_each(|(_, d)| *d = one),
            Self::Sigmoid => pulp::Arch::new().dispatch(SigmoidWithDerivative { buf, deriv }),
            Self::Relu => pulp::Arch::new().dispatch(ReluWithDerivative { buf, deriv }),
            Self::Tanh => pairs.for_each(|(v, d)| {
                let t = v.tanh();
                *v = t;
                *d = one - t * t;
            }),
            Self::LeakyRelu { slope } => {
                let slope = T::from_f64(slope);
                pairs.for_each(|(v, d)| {
                    if *v > zero {
                        *d = one;
                    } else {
                        *v = slope * *v;
                        *d = slope;
                    }
                });
            }
        }
    }
}

impl OutputHead {
    /// Writes the head's output for row-major `logits` (rows of `width`) into `out`.
    pub fn apply_rows<T: Float>(self, logits: &[T], out: &mut [T], width: usize) {
        pulp::Arch::new().dispatch(HeadRows {
            head: self,
            logits,
            out,
            width,
        })
    }
}

// The elementwise passes below are compiled for the CPU's widest vectors (AVX-512 / AVX2)
// through pulp: each loop sits in an `#[inline(always)]` `with_simd`, which pulp inlines into
// a function built with those features. (A closure handed to `dispatch` is not enough: rustc
// may keep its body out of line, compiled for baseline x86-64, and did for these loops, which
// then ran one value at a time with a library call to `floorf` in each `exp`.) The results do
// not depend on the instruction set: the arithmetic has no fused multiply-adds.

struct SigmoidInPlace<'a, T>(&'a mut [T]);

impl<T: Float> pulp::WithSimd for SigmoidInPlace<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for v in self.0.iter_mut() {
            *v = hidden_sigmoid(*v);
        }
    }
}

struct SigmoidWithDerivative<'a, T> {
    buf: &'a mut [T],
    deriv: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for SigmoidWithDerivative<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let one = T::from_f64(1.0);
        for (v, d) in self.buf.iter_mut().zip(self.deriv.iter_mut()) {
            let s = hidden_sigmoid(*v);
            *v = s;
            *d = s * (one - s);
        }
    }
}

struct ReluInPlace<'a, T>(&'a mut [T]);

impl<T: Float> pulp::WithSimd for ReluInPlace<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.0.iter_mut().for_each(|v| *v = relu(*v));
    }
}

struct ReluWithDerivative<'a, T> {
    buf: &'a mut [T],
    deriv: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for ReluWithDerivative<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::from_f64(0.0);
        let one = T::from_f64(1.0);
        for (v, d) in self.buf.iter_mut().zip(self.deriv.iter_mut()) {
            let pos = *v > zero;
            *d = if pos { one } else { zero };
            *v = if pos { *v } else { zero };
        }
    }
}

struct HeadRows<'a, T> {
    head: OutputHead,
    logits: &'a [T],
    out: &'a mut [T],
    width: usize,
}

impl<T: Float> pulp::WithSimd for HeadRows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match self.head {
            OutputHead::Sigmoid => {
                for (o, &z) in self.out.iter_mut().zip(self.logits) {
                    *o = sigmoid(z);
                }
            }
            OutputHead::Softmax => {
                if self.width == 0 {
                    return;
                }
                let rows = self.logits.chunks_exact(self.width);
                for (z, p) in rows.zip(self.out.chunks_exact_mut(self.width)) {
                    softmax_row(z, p);
                }
            }
        }
    }
}

/// Softmax of one row, stabilised by subtracting the row maximum (so every exponent is `<= 0`
/// and the sum is `>= 1`: finite for any finite logits).
#[inline(always)]
pub fn softmax_row<T: Float>(z: &[T], p: &mut [T]) {
    let Some(&first) = z.first() else { return };
    let max = z.iter().fold(first, |m, &v| if v > m { v } else { m });
    let mut sum = T::from_f64(0.0);
    for (pi, &zi) in p.iter_mut().zip(z) {
        let e = (zi - max).exp_nonpositive();
        *pi = e;
        sum += e;
    }
    let inv = T::from_f64(1.0) / sum;
    p.iter_mut().for_each(|pi| *pi *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::relative_error;

    const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.07 },
    ];

    /// The vectorized passes (compiled for AVX2 / AVX-512 where the CPU has them) give the
    /// scalar formulas' values bit for bit, over the whole range including saturation.
    #[test]
    fn batch_passes_equal_the_scalar_formulas_bit_for_bit() {
        let zs: Vec<f32> = (0..4001)
            .map(|i| (i as f32 - 2000.0) * 0.047)
            .chain([-1e4, -88.8, -87.4, 88.8, 1e4, 0.0, -0.0])
            .collect();
        for act in ALL {
            let mut out = zs.clone();
            act.forward_in_place(&mut out);
            let mut with_d = zs.clone();
            let mut d = vec![0.0f32; zs.len()];
            act.forward_with_derivative(&mut with_d, &mut d);
            for (i, &z) in zs.iter().enumerate() {
                let want = act.apply(z).to_bits();
                assert_eq!(out[i].to_bits(), want, "{act:?} forward at {z}");
                assert_eq!(
                    with_d[i].to_bits(),
                    want,
                    "{act:?} forward (training) at {z}"
                );
                let dz = act.derivative(z).to_bits();
                assert_eq!(d[i].to_bits(), dz, "{act:?} derivative at {z}");
            }
        }
        let mut p = vec![0.0f32; zs.len()];
        OutputHead::Sigmoid.apply_rows(&zs, &mut p, 1);
        for (&z, &pi) in zs.iter().zip(&p) {
            assert_eq!(pi.to_bits(), sigmoid(z).to_bits(), "sigmoid head at {z}");
        }
        let width = 7;
        let rows = zs.len() / width;
        OutputHead::Softmax.apply_rows(&zs[..rows * width], &mut p[..rows * width], width);
        for (z, got) in zs.chunks_exact(width).zip(p.chunks_exact(width)) {
            let mut want = [0.0f32; 7];
            softmax_row(z, &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(&want), "softmax of {z:?}");
        }
    }

    #[test]
    fn derivatives_match_central_differences() {
        // Points away from ReLU's kink at 0 (where finite differences are meaningless) and from
        // deep saturation (where they lose all digits to cancellation).
        let points = [-3.1, -1.2, -0.4, 0.3, 0.9, 2.5, 4.0];
        let h = 1e-6;
        for act in ALL {
            let mut buf: Vec<f64> = points.to_vec();
            let mut deriv = vec![0.0; points.len()];
            act.forward_with_derivative(&mut buf, &mut deriv);
            for (i, &z) in points.iter().enumerate() {
                let numeric = (act.apply(z + h) - act.apply(z - h)) / (2.0 * h);
                let err = relative_error(deriv[i], numeric);
                assert!(
                    err < 1e-6,
                    "{act:?} at {z}: analytic {} numeric {numeric} err {err}",
                    deriv[i]
                );
                assert_eq!(
                    buf[i].to_bits(),
                    act.apply(z).to_bits(),
                    "{act:?} fused value"
                );
                assert_eq!(
                    deriv[i].to_bits(),
                    act.derivative(z).to_bits(),
                    "{act:?} fused derivative"
                );
            }
            let mut eval = points.to_vec();
            act.forward_in_place(&mut eval);
            assert_eq!(eval, buf, "{act:?} eval pass equals training pass");
        }
    }

    #[test]
    fn sigmoid_is_finite_at_extremes() {
        for z in [
            -1e4f32,
            -100.0,
            -88.8,
            0.0,
            88.8,
            100.0,
            1e4,
            f32::MAX,
            f32::MIN,
        ] {
            let s = sigmoid(z);
            assert!(
                s.is_finite() && (0.0..=1.0).contains(&s),
                "sigmoid({z}) = {s}"
            );
        }
        assert_eq!(sigmoid(0.0f64), 0.5);
        assert!(sigmoid(-800.0f64) >= 0.0 && sigmoid(800.0f64) == 1.0);
    }

    #[test]
    fn saturated_hidden_sigmoids_give_exact_zeros_whose_products_stay_normal() {
        let flush = f32::FLUSH_BELOW;
        let mut z: Vec<f32> = (0..4000).map(|i| -120.0 + 0.03 * i as f32).collect();
        z.extend([f32::MIN, -1e4, -87.5, -34.7, -34.6, 0.0, f32::MAX]);
        let mut buf = z.clone();
        let mut deriv = vec![0.0f32; z.len()];
        Activation::Sigmoid.forward_with_derivative(&mut buf, &mut deriv);
        for ((&zi, &s), &d) in z.iter().zip(&buf).zip(&deriv) {
            assert!(s == 0.0 || s >= flush, "hidden sigmoid({zi}) = {s:e}");
            // What the next layer multiplies: value and derivative by each other (and by
            // themselves) stay normal or exactly zero.
            for p in [s * s, s * d, d * d, s * 1e-3, d * 1e-3] {
                assert!(p == 0.0 || p.is_normal(), "products at {zi}: {p:e}");
            }
            // Below the threshold exactly zero; above it the plain sigmoid, bit for bit.
            let plain = sigmoid(zi);
            let expect = if plain < flush { 0.0 } else { plain };
            assert_eq!(s.to_bits(), expect.to_bits(), "at {zi}");
        }
        // The cut sits where sigmoid(z) = 2^-50, z = -50 ln 2 = -34.66.
        assert_eq!(Activation::Sigmoid.apply(-34.7f32), 0.0);
        assert!(Activation::Sigmoid.apply(-34.6f32) > 0.0);
        // Output heads report the unflushed probability.
        let mut p = [0.0f32];
        OutputHead::Sigmoid.apply_rows(&[-60.0f32], &mut p, 1);
        assert!(p[0] > 0.0 && p[0] < flush);
    }

    #[test]
    fn softmax_known_values() {
        let z = [1.0f64, 2.0, 3.0];
        let mut p = [0.0; 3];
        softmax_row(&z, &mut p);
        let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        for (pi, ei) in p.iter().zip(&e) {
            assert!((pi - ei / s).abs() < 1e-15);
        }
    }

    #[test]
    fn activation_serde_is_snake_case() {
        let json = serde_json::to_string(&ALL).unwrap();
        assert_eq!(
            json,
            r#"["identity","sigmoid","tanh","relu",{"leaky_relu":{"slope":0.07}}]"#
        );
        let back: Vec<Activation> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ALL);
        assert_eq!(
            serde_json::to_string(&OutputHead::Softmax).unwrap(),
            r#""softmax""#
        );
    }
}
