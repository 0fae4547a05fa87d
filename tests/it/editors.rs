//! editors tests.
