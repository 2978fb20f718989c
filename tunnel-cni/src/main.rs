//! tunnel-cni: a chained CNI plugin that registers each pod with the node's tunnel daemon,
//! so that its TCP is carried over mTLS from its first packet; and, as `tunnel-cni install`,
//! the installer that puts itself into the node's CNI config.
//!
//! Without arguments it is the plugin (the runtime passes everything in the environment and
//! on stdin, and reads the result on stdout), so it prints nothing else to stdout.

mod conflist;
mod files;
mod install;
mod plugin;

use std::{
    io::{Read as _, Write as _},
    path::Path,
    process::ExitCode,
};

use clap::Parser as _;
use install::{Cli, Command, InstallError};
use tunnel_cni::{args, config, error};

fn main() -> ExitCode {
    // The runtime runs the plugin without arguments; only the installer's commands take any,
    // and only they go through clap (which exits 2 on a usage error, 0 after --help).
    if std::env::args_os().len() < 2 {
        return run_plugin();
    }
    match Cli::parse().command {
        Command::Install(options) => installer(
            "install",
            install::install(
                &options,
                // The file this process runs from, whatever it was called or linked as.
                Path::new("/proc/self/exe"),
                &mut say,
            ),
        ),
        Command::Uninstall(options) => {
            installer("uninstall", install::uninstall(&options, &mut say))
        }
    }
}

fn say(line: String) {
    println!("tunnel-cni: {line}");
}

fn installer(name: &str, result: Result<(), InstallError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel-cni {name}: {}", error::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_plugin() -> ExitCode {
    let invocation = plugin::Invocation::from_env();
    let mut stdin = Vec::new();
    let mut read_error = None;
    let result = plugin::run(&invocation, || {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            read_error = Some(e);
        }
        stdin.clone()
    });
    let result = match read_error {
        Some(e) => Err(error::CniError::new(
            error::code::DECODE,
            format!("cannot read the network config from stdin: {e}"),
        )),
        None => result,
    };
    let mut stdout = std::io::stdout().lock();
    match result {
        Ok(output) => {
            if let Some(output) = output {
                // A runtime that cannot read our result fails the pod anyway; nothing to add.
                let _ = writeln!(stdout, "{output}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tunnel-cni: {e}");
            let _ = writeln!(stdout, "{}", e.to_json(&config::version_of(&stdin)));
            ExitCode::FAILURE
        }
    }
}
