//! ftvmm
