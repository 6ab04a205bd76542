//! `mnist`: the command line of mnist-rs.
//!
//! A thin clap front end over the library crates. Today it has `download`; `train`, `eval`,
//! `predict` and `inspect` follow as `mnist-train` grows (see ARCHITECTURE.md).

fn main() {
    println!("mnist-cli: not yet implemented");
}
