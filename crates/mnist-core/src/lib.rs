//! # mnist-core
//!
//! The engine of mnist-rs: everything needed to define, run, differentiate and update a fully
//! connected network, independent of files, configs and datasets.
//!
//! It will hold dense layers on faer matrices (one GEMM per layer per batch, into preallocated
//! buffers), activations and output heads, losses with their gradients, initializers,
//! L2 and dropout, optimizers (SGD, momentum/Nesterov, Adam, RMSprop) and learning-rate
//! schedules, finite-difference gradient checks, and model save/load in safetensors.
//!
//! This crate is being built (see ARCHITECTURE.md); for now it only marks its place.
