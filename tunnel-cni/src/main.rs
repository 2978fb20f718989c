//! tunnel-cni: a chained CNI plugin that registers each pod with the node's tunnel daemon,
//! so that its TCP is carried over mTLS from its first packet; and, as `tunnel-cni install`,
//! the installer that puts itself into the node's CNI config.
//!
//! Without arguments it is the plugin (the runtime passes everything in the environment and
//! on stdin, and reads the result on stdout), so it prints nothing else to stdout.

mod args;
mod config;
mod conflist;
mod error;
mod files;
mod install;
mod plugin;

use std::{
    io::{Read as _, Write as _},
    path::Path,
    process::ExitCode,
};

use install::{InstallError, InstallOptions, USAGE, UninstallOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => run_plugin(),
        Some("install") => installer("install", || {
            install::install(
                &InstallOptions::parse(&args[1..])?,
                // The file this process runs from, whatever it was called or linked as.
                Path::new("/proc/self/exe"),
                &mut say,
            )
        }),
        Some("uninstall") => installer("uninstall", || {
            install::uninstall(&UninstallOptions::parse(&args[1..])?, &mut say)
        }),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("tunnel-cni: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn say(line: String) {
    println!("tunnel-cni: {line}");
}

fn installer(name: &str, run: impl FnOnce() -> Result<(), InstallError>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel-cni {name}: {}", error::chain(&e));
            ExitCode::from(if matches!(e, InstallError::Usage(_)) {
                2
            } else {
                1
            })
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
