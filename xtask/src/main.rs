//! `cargo xtask`: project chores.
fn main() {
    println!("xtask: not yet implemented");
}
