//! `tunnel ca ...` (being written).

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {}
