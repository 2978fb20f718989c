//! Finding pods among a node's processes (a /proc made of files), and when a pod is tried
//! again.

use super::*;

const UID: &str = "6f1c2a9e-1b7e-4c1e-9d7a-2f5a8e0c3b11";

#[test]
fn a_pod_is_found_in_either_drivers_cgroup_wherever_the_path_starts() {
    let uids = HashSet::from([UID.to_string()]);
    let underscored = UID.replace('-', "_");
    for cgroup in [
        format!("0::/kubepods/besteffort/pod{UID}/0123abcd\n"),
        format!("0::/kubepods/pod{UID}/0123abcd\n"),
        format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-0123.scope\n"
        ),
        format!("0::/kubepods.slice/kubepods-pod{underscored}.slice/crio-0123.scope\n"),
        // Read from the daemon's own cgroup namespace.
        format!("0::/../../pod{UID}/pause\n"),
        format!(
            "0::/../kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/cri-containerd-0123.scope\n"
        ),
        // A hybrid host: cgroup v1 lines first.
        format!(
            "12:pids:/kubepods/besteffort/pod{UID}/0123\n1:name=systemd:/kubepods/besteffort/pod{UID}/0123\n0::/\n"
        ),
    ] {
        assert_eq!(pod_in(&cgroup, &uids), Some(&UID.to_string()), "{cgroup}");
    }
    for cgroup in [
        "0::/\n".to_string(),
        "0::/system.slice/containerd.service\n".into(),
        "0::/kubepods/besteffort/pod00000000-1b7e-4c1e-9d7a-2f5a8e0c3b11/0123\n".into(),
        format!("0::/user.slice/notpod{UID}\n"),
    ] {
        assert_eq!(pod_in(&cgroup, &uids), None, "{cgroup}");
    }
}

fn node_pod(uid: &str, ip: &str) -> NodePod {
    NodePod {
        namespace: "shop".into(),
        name: format!("pod-{uid}"),
        uid: uid.into(),
        ips: vec![ip.parse().unwrap()],
    }
}

#[test]
fn a_pod_is_tried_again_once_it_has_stayed_unregistered_a_whole_period() {
    // At start, `a` was tried and failed.
    let mut enrolment = Enrolment {
        pending: HashSet::from([pending_key(&node_pod("a", "10.1.1.2"))]),
        failed: HashMap::from([("a".into(), EnrolFailure::no_process)]),
    };
    // A period later: `a` is still unregistered (tried again); `b` is new (a sandbox
    // being set up, or replaced: not yet).
    let due = enrolment.due(vec![node_pod("a", "10.1.1.2"), node_pod("b", "10.1.1.3")]);
    assert_eq!(due, vec![node_pod("a", "10.1.1.2")]);
    // Then `b` has stayed so, `a` has a new address (a new sandbox: wait again), and `a`'s
    // failure is remembered while it is unregistered.
    let due = enrolment.due(vec![node_pod("a", "10.1.1.9"), node_pod("b", "10.1.1.3")]);
    assert_eq!(due, vec![node_pod("b", "10.1.1.3")]);
    assert!(enrolment.failed.contains_key("a"));
    // `a` registered (or gone): its failure is forgotten, so a later one is said again.
    let due = enrolment.due(vec![node_pod("b", "10.1.1.3")]);
    assert_eq!(due, vec![node_pod("b", "10.1.1.3")]);
    assert!(enrolment.failed.is_empty());
}

/// A /proc of files: `<pid>/cgroup` and `<pid>/ns/net` (a plain file whose device and
/// inode stand for the namespace's).
struct FakeProc {
    root: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("proc")).unwrap();
        fs::create_dir_all(root.path().join("netns")).unwrap();
        Self { root }
    }

    fn proc(&self) -> PathBuf {
        self.root.path().join("proc")
    }

    fn netns_dir(&self) -> PathBuf {
        self.root.path().join("netns")
    }

    /// A namespace (a file), pinned in the netns directory as `pinned` if given.
    fn namespace(&self, name: &str, pinned: Option<&str>) -> PathBuf {
        let file = self.root.path().join(name);
        fs::write(&file, "").unwrap();
        if let Some(pinned) = pinned {
            fs::hard_link(&file, self.netns_dir().join(pinned)).unwrap();
        }
        file
    }

    fn process(&self, pid: u32, cgroup: &str, netns: Option<&Path>) {
        let dir = self.proc().join(pid.to_string());
        fs::create_dir_all(dir.join("ns")).unwrap();
        fs::write(dir.join("cgroup"), cgroup).unwrap();
        if let Some(netns) = netns {
            fs::hard_link(netns, dir.join("ns/net")).unwrap();
        }
    }
}

#[test]
fn a_pods_namespace_is_named_by_its_pinned_file_else_by_its_process() {
    let fake = FakeProc::new();
    let other = "00000000-1b7e-4c1e-9d7a-2f5a8e0c3b11";
    let pinned_pod = UID;
    let unpinned_pod = "11111111-1b7e-4c1e-9d7a-2f5a8e0c3b11";
    let gone_pod = "22222222-1b7e-4c1e-9d7a-2f5a8e0c3b11";
    let sandbox = fake.namespace("a", Some("cni-a"));
    let unpinned = fake.namespace("b", None);
    let elsewhere = fake.namespace("c", None);
    // The pause process and an application container: one namespace.
    fake.process(
        100,
        &format!("0::/../pod{pinned_pod}/pause\n"),
        Some(&sandbox),
    );
    fake.process(
        101,
        &format!("0::/../pod{pinned_pod}/app\n"),
        Some(&sandbox),
    );
    fake.process(
        102,
        &format!("0::/../pod{unpinned_pod}/pause\n"),
        Some(&unpinned),
    );
    // A process of the pod's cgroup in another namespace: a candidate too, judged by
    // the addresses it holds.
    fake.process(
        103,
        &format!("0::/../pod{unpinned_pod}/odd\n"),
        Some(&elsewhere),
    );
    // Exited during the scan: its namespace is gone.
    fake.process(104, &format!("0::/../pod{gone_pod}/pause\n"), None);
    // Not looked for.
    fake.process(105, &format!("0::/../pod{other}/pause\n"), Some(&elsewhere));
    fs::create_dir_all(fake.proc().join("self")).unwrap();
    let uids = HashSet::from([pinned_pod, unpinned_pod, gone_pod].map(String::from));
    let netns_dir = fake.netns_dir();
    let missing = fake.root.path().join("missing");
    let found = scan(&fake.proc(), &[&netns_dir, &missing], &uids).unwrap();

    let mut unpinned: Vec<_> = found.sandboxes[unpinned_pod]
        .iter()
        .map(|s| (s.pid, s.path.clone()))
        .collect();
    unpinned.sort();
    // Either of its processes may be met first.
    let pinned = &found.sandboxes[pinned_pod];
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    assert_eq!(pinned[0].path, netns_dir.join("cni-a"));
    assert!([100, 101].contains(&pinned[0].pid));
    assert_eq!(
        unpinned,
        vec![
            (102, fake.proc().join("102/ns/net")),
            (103, fake.proc().join("103/ns/net"))
        ]
    );
    assert!(!found.sandboxes.contains_key(gone_pod));
    assert!(!found.sandboxes.contains_key(other));
    assert!(found.unreadable.is_empty(), "{:?}", found.unreadable);
}
