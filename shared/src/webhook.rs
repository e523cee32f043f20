//! Filled by its function's issue.
