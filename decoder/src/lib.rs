//! Reference dequantizer for the Athena vector-codebook encoding (format-spec/athena-encoding.md).
#![no_std]
