//! Core tests (filled below).
