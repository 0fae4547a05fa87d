//! corruption tests.
