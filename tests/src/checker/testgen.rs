//! Test-only: random histories.
