//! STAND-IN module root (replaced when the transactions work lands).
pub mod tx;
