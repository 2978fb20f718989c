use clap::Parser as _;
use tunnel::cli::Cli;

fn main() {
    let _cli = Cli::parse();
}
