//! `tunnel pod add/del/list/check`: the registration API by hand, as `tunnel-cni` uses it
//! (for debugging a node, or registering a network namespace that no CNI runtime made).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use tunnel_pod_api::{DEFAULT_SOCKET, PodSpec, PodStatus, Request, Response};

/// Each call's limit (an ADD may wait for the Kubernetes API).
const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  tunnel pod add --netns /var/run/netns/cni-1234 --pod shop/orders-0 --uid 6f1c2a9e-...\n  \
tunnel pod list\n  tunnel pod del --uid 6f1c2a9e-...\n\n\
Exit codes: 0 done, 1 the daemon refused or did not answer."
)]
pub struct PodArgs {
    /// The daemon's registration socket ([pods] socket).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// One JSON document instead of lines.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: PodCommand,
}

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Register a pod: the daemon opens its listeners inside the namespace and issues its
    /// certificate.
    Add {
        /// The pod's network namespace (`/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
        #[arg(long, value_name = "PATH")]
        netns: PathBuf,
        /// NAMESPACE/NAME.
        #[arg(long, value_name = "NAMESPACE/NAME")]
        pod: String,
        #[arg(long)]
        uid: String,
        /// The identity to give it, instead of the daemon's template.
        #[arg(long, value_name = "ID")]
        spiffe_id: Option<String>,
    },
    /// Remove a pod (succeeds for pods that are not registered).
    Del {
        #[arg(long)]
        uid: String,
    },
    /// Whether a pod is registered and served.
    Check {
        #[arg(long)]
        uid: String,
    },
    /// Every registered pod.
    List,
}

pub fn run(args: PodArgs) -> ExitCode {
    let request = match args.command {
        PodCommand::Add {
            netns,
            pod,
            uid,
            spiffe_id,
        } => {
            let Some((namespace, name)) = pod.split_once('/') else {
                eprintln!("--pod {pod:?}: expected NAMESPACE/NAME");
                return ExitCode::from(64);
            };
            Request::Add(PodSpec {
                namespace: namespace.into(),
                name: name.into(),
                uid,
                netns,
                spiffe_id,
            })
        }
        PodCommand::Del { uid } => Request::Del { uid },
        PodCommand::Check { uid } => Request::Check { uid },
        PodCommand::List => Request::List,
    };
    match tunnel_pod_api::call(&args.socket, &request, TIMEOUT) {
        Ok(response) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&response).expect("responses always serialize")
            );
            ExitCode::SUCCESS
        }
        Ok(Response::Pod(pod)) => {
            print_pod(&pod);
            ExitCode::SUCCESS
        }
        Ok(Response::Pods { pods }) => {
            if pods.is_empty() {
                println!("no pods registered");
            }
            for pod in &pods {
                print_pod(pod);
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Removed { was_registered }) => {
            println!(
                "{}",
                if was_registered {
                    "removed"
                } else {
                    "not registered (nothing to remove)"
                }
            );
            ExitCode::SUCCESS
        }
        Ok(Response::Error { error }) | Err(tunnel_pod_api::ClientError::Refused(error)) => {
            eprintln!("refused: {error}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn print_pod(pod: &PodStatus) {
    println!(
        "{}/{} uid={} identity={} ips={} netns={}\n  listeners: {}",
        pod.namespace,
        pod.name,
        pod.uid,
        pod.spiffe_id,
        pod.ips.join(","),
        pod.netns.display(),
        pod.listeners.join(", ")
    );
}
