//! A fixed-length buffer whose values start on a 64-byte boundary.
//!
//! The sparse kernels read and update the first layer's panels one cell (`PANEL` values, 128
//! bytes in `f32`) at a time with 32- or 64-byte vector loads. A large `Vec` from the system
//! allocator starts 16 bytes past a page boundary, so every second 32-byte load of a cell
//! straddled two cache lines (costing two); aligned panels made two-layer-sigmoid's training
//! epoch about 17% faster. (The activations, weights and gradients stay plain `Vec`s: faer
//! packs what it reads, and aligning them measured no different.) The crate forbids unsafe
//! code, so the allocation itself cannot be aligned: the buffer over-allocates a little and
//! starts its slice at the first 64-byte boundary inside.

use std::ops::{Deref, DerefMut};

/// Values a buffer allocates beyond its length: room to reach a 64-byte boundary from any
/// start of a `T` of one byte or more.
const SLACK: usize = 64;

/// A `[T]` of fixed length starting on a 64-byte boundary; derefs to the slice.
pub(crate) struct AlignedVec<T> {
    buf: Vec<T>,
    len: usize,
}

impl<T: Clone> AlignedVec<T> {
    /// `len` copies of `value`.
    pub(crate) fn filled(len: usize, value: T) -> Self {
        Self {
            buf: vec![value; len + SLACK],
            len,
        }
    }

    /// A copy of `values`.
    pub(crate) fn from_slice(values: &[T]) -> Self {
        match values.first() {
            None => Self::default(),
            Some(first) => {
                let mut v = Self::filled(values.len(), first.clone());
                v.clone_from_slice(values);
                v
            }
        }
    }
}

impl<T> AlignedVec<T> {
    fn offset(&self) -> usize {
        let off = self.buf.as_ptr().align_offset(64);
        if off <= SLACK { off } else { 0 }
    }
}

impl<T> Default for AlignedVec<T> {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let off = self.offset();
        self.buf.get(off..off + self.len).unwrap_or(&[])
    }
}

impl<T> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let off = self.offset();
        let len = self.len;
        self.buf.get_mut(off..off + len).unwrap_or(&mut [])
    }
}

impl<'a, T> IntoIterator for &'a AlignedVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut AlignedVec<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T: Clone> Clone for AlignedVec<T> {
    /// The same values in a new buffer, aligned in its own right (a plain copy of the `Vec`
    /// could land at a different offset from a boundary).
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for AlignedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_clones_its_values() {
        for len in [1usize, 31, 32 * 784, 13 * 32 * 784] {
            let mut v = AlignedVec::<f32>::filled(len, 0.0);
            assert_eq!(v.len(), len);
            assert_eq!(v.as_ptr() as usize % 64, 0, "{len} values");
            assert!(v.iter().all(|&x| x == 0.0));
            for (i, x) in v.iter_mut().enumerate() {
                *x = i as f32;
            }
            let copy = v.clone();
            assert_eq!(copy.as_ptr() as usize % 64, 0);
            assert_eq!(copy, v);
            assert_eq!(format!("{:?}", AlignedVec::from_slice(&v[..1])), "[0.0]");
        }
        let wide = AlignedVec::<f64>::filled(100, 1.5);
        assert_eq!(wide.as_ptr() as usize % 64, 0);
        assert!(AlignedVec::<f32>::default().clone().is_empty());
        assert!(AlignedVec::<f32>::from_slice(&[]).is_empty());
    }
}
