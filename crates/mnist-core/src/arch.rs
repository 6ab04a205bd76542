//! Network architecture: layer widths, hidden activations and output head.

use serde::{Deserialize, Serialize};

use crate::{Activation, ArchitectureError, OutputHead};

/// The shape of a fully connected network.
///
/// `sizes = [784, 100, 10]` is one hidden layer of 100 units: two dense layers, the first
/// `784 -> 100` followed by `hidden_activations[0]`, the last `100 -> 10` followed by `output`.
/// Fields are public for serde; [`Architecture::new`] and [`Architecture::validate`] check them,
/// and every constructor in this crate validates before use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Widths: input, hidden layers..., output.
    pub sizes: Vec<usize>,
    /// One activation per hidden layer (`sizes.len() - 2` entries).
    pub hidden_activations: Vec<Activation>,
    /// The output head.
    pub output: OutputHead,
}

/// Which nonlinearity follows a dense layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerActivation {
    /// A hidden layer's activation.
    Hidden(Activation),
    /// The last layer's head.
    Output(OutputHead),
}

/// One dense layer as described by an [`Architecture`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    /// Input width (`fan_in`).
    pub inputs: usize,
    /// Output width (`fan_out`).
    pub outputs: usize,
    /// What follows the affine map.
    pub activation: LayerActivation,
}

impl Architecture {
    /// Builds and validates an architecture.
    pub fn new(
        sizes: Vec<usize>,
        hidden_activations: Vec<Activation>,
        output: OutputHead,
    ) -> Result<Self, ArchitectureError> {
        let arch = Self {
            sizes,
            hidden_activations,
            output,
        };
        arch.validate()?;
        Ok(arch)
    }

    /// Same activation on every hidden layer.
    pub fn uniform(
        sizes: Vec<usize>,
        hidden: Activation,
        output: OutputHead,
    ) -> Result<Self, ArchitectureError> {
        let n = sizes.len().saturating_sub(2);
        Self::new(sizes, vec![hidden; n], output)
    }

    /// Checks the invariants: at least two sizes, no zero width, one activation per hidden
    /// layer, finite leaky slopes, at most 256 outputs.
    pub fn validate(&self) -> Result<(), ArchitectureError> {
        if self.sizes.len() < 2 {
            return Err(ArchitectureError::TooFewSizes(self.sizes.len()));
        }
        if let Some(index) = self.sizes.iter().position(|&s| s == 0) {
            return Err(ArchitectureError::ZeroWidth { index });
        }
        let hidden = self.sizes.len() - 2;
        if self.hidden_activations.len() != hidden {
            return Err(ArchitectureError::ActivationCount {
                hidden,
                got: self.hidden_activations.len(),
            });
        }
        for (layer, a) in self.hidden_activations.iter().enumerate() {
            if let Activation::LeakyRelu { slope } = *a
                && !slope.is_finite()
            {
                return Err(ArchitectureError::BadSlope { layer, slope });
            }
        }
        let outputs = self.outputs();
        if outputs > 256 {
            return Err(ArchitectureError::TooManyOutputs(outputs));
        }
        Ok(())
    }

    /// Number of dense layers (`sizes.len() - 1`).
    pub fn num_layers(&self) -> usize {
        self.sizes.len().saturating_sub(1)
    }

    /// Number of hidden layers (`sizes.len() - 2`).
    pub fn num_hidden(&self) -> usize {
        self.sizes.len().saturating_sub(2)
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.sizes.first().copied().unwrap_or(0)
    }

    /// Output width (number of classes).
    pub fn outputs(&self) -> usize {
        self.sizes.last().copied().unwrap_or(0)
    }

    /// The dense layers, first to last.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = LayerSpec> + '_ {
        let last = self.num_layers().saturating_sub(1);
        self.sizes
            .windows(2)
            .enumerate()
            .map(move |(i, w)| LayerSpec {
                inputs: w[0],
                outputs: w[1],
                activation: if i == last {
                    LayerActivation::Output(self.output)
                } else {
                    LayerActivation::Hidden(
                        self.hidden_activations
                            .get(i)
                            .copied()
                            .unwrap_or(Activation::Identity),
                    )
                },
            })
    }

    /// Total number of parameters (weights + biases).
    pub fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        use ArchitectureError as E;
        let relu = Activation::Relu;
        assert_eq!(
            Architecture::uniform(vec![4], relu, OutputHead::Softmax),
            Err(E::TooFewSizes(1))
        );
        assert_eq!(
            Architecture::uniform(vec![4, 0, 3], relu, OutputHead::Softmax),
            Err(E::ZeroWidth { index: 1 })
        );
        assert_eq!(
            Architecture::new(vec![4, 5, 3], vec![], OutputHead::Softmax),
            Err(E::ActivationCount { hidden: 1, got: 0 })
        );
        assert_eq!(
            Architecture::new(
                vec![4, 5, 3],
                vec![Activation::LeakyRelu { slope: f64::NAN }],
                OutputHead::Softmax
            )
            .map_err(|e| matches!(e, E::BadSlope { layer: 0, .. })),
            Err(true)
        );
        assert_eq!(
            Architecture::uniform(vec![4, 300], relu, OutputHead::Softmax),
            Err(E::TooManyOutputs(300))
        );
        let a = Architecture::uniform(
            vec![784, 100, 30, 10],
            Activation::Tanh,
            OutputHead::Sigmoid,
        )
        .unwrap();
        assert_eq!(a.num_layers(), 3);
        assert_eq!(
            a.num_params(),
            784 * 100 + 100 + 100 * 30 + 30 + 30 * 10 + 10
        );
        let specs: Vec<_> = a.layers().collect();
        assert_eq!(
            specs[2].activation,
            LayerActivation::Output(OutputHead::Sigmoid)
        );
        assert_eq!(
            specs[1].activation,
            LayerActivation::Hidden(Activation::Tanh)
        );
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"sizes":[784,100,30,10],"hidden_activations":["tanh","tanh"],"output":"sigmoid"}"#
        );
    }
}
