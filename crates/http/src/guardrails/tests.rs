//! Unit tests of guardrail selection and the built-ins.
