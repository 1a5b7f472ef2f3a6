//! The watch hub's integration suite: one binary, shared fixtures.

mod behaviour;
mod checker_tests;
mod checkers;
mod fixture;
mod random;
