//! End-to-end tests of mnist-rs live in `tests/tests/`; this library holds their shared helpers.
