//! The CNI commands. tunnel-cni is a chained plugin: the main plugin (bridge, Calico, ...)
//! has made the pod's interface and addresses; we ask the node's tunnel daemon to protect the
//! pod's network namespace, and pass the main plugin's result on unchanged.

use std::{
    ffi::OsString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};
use tunnel_pod_api::{ClientError, PodSpec, Request, Response};

use crate::{
    args::CniArgs,
    config::{NetConf, SUPPORTED_VERSIONS},
    error::{CniError, chain, code},
};

/// What the runtime told us in the environment.
#[derive(Debug, Default)]
pub struct Invocation {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub args: CniArgs,
}

impl Invocation {
    /// `CNI_IFNAME` and `CNI_PATH` are not read: we make no interface and call no plugin.
    pub fn from_env() -> Self {
        let var = |key| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(|v: OsString| v.to_string_lossy().into_owned())
        };
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: std::env::var_os("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            args: CniArgs::parse(&var("CNI_ARGS").unwrap_or_default()),
        }
    }
}

/// What a command prints on success (DEL and CHECK print nothing).
pub type Output = Option<Value>;

/// Runs the command. `stdin` is read by the caller except for VERSION, which needs none.
pub fn run(invocation: &Invocation, stdin: impl FnOnce() -> Vec<u8>) -> Result<Output, CniError> {
    match invocation.command.as_deref() {
        Some("ADD") => add(invocation, &NetConf::parse(&stdin())?),
        Some("DEL") => del(invocation, &NetConf::parse(&stdin())?),
        Some("CHECK") => check(invocation, &NetConf::parse(&stdin())?),
        Some("VERSION") => Ok(Some(version())),
        Some(other) => Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND is {other:?}; tunnel-cni knows ADD, DEL, CHECK and VERSION"),
        )),
        None => Err(CniError::new(
            code::INVALID_ENV,
            "CNI_COMMAND is not set: tunnel-cni is a CNI plugin, run by the container runtime \
             (to install it: tunnel-cni install --help)",
        )),
    }
}

pub fn version() -> Value {
    json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS})
}

fn add(invocation: &Invocation, conf: &NetConf) -> Result<Output, CniError> {
    let Some(prev_result) = &conf.prev_result else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "the network config has no prevResult: tunnel-cni is a chained plugin and must \
             come after the main network plugin in a conflist's \"plugins\" (tunnel-cni \
             install puts it there)",
        ));
    };
    let pod = invocation.args.k8s_pod()?;
    let Some(netns) = &invocation.netns else {
        return Err(CniError::new(
            code::INVALID_ENV,
            "CNI_NETNS is not set: ADD needs the pod's network namespace",
        ));
    };
    let who = format!("pod {}/{} (uid {})", pod.namespace, pod.name, pod.uid);
    let request = Request::Add(PodSpec {
        namespace: pod.namespace,
        name: pod.name,
        uid: pod.uid,
        netns: netns.clone(),
        spiffe_id: None,
    });
    match tunnel_pod_api::call(&conf.socket, &request, conf.timeout) {
        Ok(Response::Pod(status)) => {
            eprintln!(
                "tunnel-cni: {who} in {} is protected as {} (listeners: {})",
                netns.display(),
                status.spiffe_id,
                status.listeners.join(", ")
            );
        }
        Ok(other) => return Err(confused("ADD", &other)),
        Err(e) => {
            return Err(
                call_failed(&format!("cannot protect {who}"), e).details(format!(
                    "network namespace {}, container {}, daemon socket {}, timeout {:?}; the pod \
                 must not start unprotected",
                    netns.display(),
                    invocation.container_id.as_deref().unwrap_or("(unnamed)"),
                    conf.socket.display(),
                    conf.timeout
                )),
            );
        }
    }
    // Our result is the previous one: we add no interface, address or route. The spec has
    // each plugin answer in the version the runtime asked for, which is the config's.
    let mut result = prev_result.clone();
    result.insert("cniVersion".into(), json!(conf.cni_version));
    Ok(Some(Value::Object(result)))
}

/// DEL must succeed when there is nothing to undo: runtimes repeat it, call it for pods whose
/// ADD failed half-way, and after a node reboot with no state at all.
fn del(invocation: &Invocation, conf: &NetConf) -> Result<Output, CniError> {
    let Some(uid) = invocation.args.uid() else {
        // Without a uid the daemon cannot know the pod; it drops pods whose network
        // namespace is gone by itself.
        eprintln!(
            "tunnel-cni: DEL for container {} without K8S_POD_UID in CNI_ARGS: nothing to tell \
             the tunnel daemon",
            invocation.container_id.as_deref().unwrap_or("(unnamed)")
        );
        return Ok(None);
    };
    let request = Request::Del { uid: uid.into() };
    match tunnel_pod_api::call(&conf.socket, &request, conf.timeout) {
        Ok(Response::Removed { .. }) => Ok(None),
        Ok(other) => Err(confused("DEL", &other)),
        // The daemon is not running (no socket, nobody accepting) or went away mid-call:
        // there are no listeners of it to close, and when it starts again it reloads its
        // records and drops the pods whose namespace is gone. Failing here would only keep
        // the runtime from tearing the pod down until the daemon is back.
        Err(e @ (ClientError::Connect { .. } | ClientError::Io { .. })) => {
            eprintln!(
                "tunnel-cni: DEL of pod uid {uid}: {}; succeeding anyway, the daemon forgets \
                 pods whose network namespace is gone when it starts",
                chain(&e)
            );
            Ok(None)
        }
        // A daemon that is up but slow, or that answered and refused, may still hold the
        // pod's listeners: fail, so that the runtime repeats the DEL (which is idempotent).
        Err(e) => Err(call_failed(&format!("cannot unregister pod uid {uid}"), e)),
    }
}

fn check(invocation: &Invocation, conf: &NetConf) -> Result<Output, CniError> {
    let Some(uid) = invocation.args.uid() else {
        return Err(CniError::new(
            code::INVALID_ENV,
            "CNI_ARGS has no K8S_POD_UID: CHECK asks the tunnel daemon about the pod by uid",
        ));
    };
    let status = match tunnel_pod_api::call(
        &conf.socket,
        &Request::Check { uid: uid.into() },
        conf.timeout,
    ) {
        Ok(Response::Pod(status)) => status,
        Ok(other) => return Err(confused("CHECK", &other)),
        Err(e) => {
            return Err(call_failed(&format!("pod uid {uid} is not protected"), e));
        }
    };
    // The same uid in another namespace means the pod's sandbox was replaced without the
    // daemon hearing of it: its listeners are in a namespace the pod no longer uses.
    if let Some(netns) = &invocation.netns
        && !same_file(netns, &status.netns)
    {
        return Err(CniError::new(
            code::DAEMON_REFUSED,
            format!(
                "pod uid {uid} is registered with the tunnel daemon for network namespace {}, \
                 not {}",
                status.netns.display(),
                netns.display()
            ),
        ));
    }
    Ok(None)
}

/// Whether two paths name the same namespace: the same file (device and inode, so that
/// `/var/run/netns/x` and `/run/netns/x` agree), or the same path when either cannot be read.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => a == b,
    }
}

/// A failed call as a CNI error: the daemon's own words for a refusal, "try again later" for
/// a daemon that is not there or too slow (the runtime retries the sandbox).
fn call_failed(what: &str, error: ClientError) -> CniError {
    let code = match &error {
        ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Io { .. } => {
            code::TRY_AGAIN_LATER
        }
        ClientError::Refused(_) => code::DAEMON_REFUSED,
        ClientError::Malformed { .. } => code::DAEMON_CONFUSED,
    };
    CniError::new(code, format!("{what}: {}", chain(&error)))
}

fn confused(command: &str, response: &Response) -> CniError {
    CniError::new(
        code::DAEMON_CONFUSED,
        format!(
            "the tunnel daemon answered {command} with {response:?}, which is not an answer to it"
        ),
    )
}
