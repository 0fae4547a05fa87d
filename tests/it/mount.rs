//! mount tests.
