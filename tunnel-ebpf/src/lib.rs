//! Exists so the crate has a library target; the programs are in `main.rs`.
#![no_std]
