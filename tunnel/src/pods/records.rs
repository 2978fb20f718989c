//! What the registration API was told, kept on disk (`[pods] state_dir`, one JSON file per
//! pod uid) so that a restarted daemon takes its pods back without the runtime's help: the
//! runtime calls ADD once per pod, and would not call it again.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use tunnel_pod_api::PodSpec;

pub struct Records {
    dir: PathBuf,
}

/// What the directory holds: the records, and each file that is not one with why.
pub struct Loaded {
    pub pods: Vec<PodSpec>,
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Records {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.into() })
    }

    /// Written whole (temporary file, then rename): a crash leaves the old record or the
    /// new one, never half of one.
    pub fn save(&self, pod: &PodSpec) -> io::Result<()> {
        let path = self.path(&pod.uid);
        let temporary = path.with_extension("json.tmp");
        fs::write(
            &temporary,
            serde_json::to_vec_pretty(pod).map_err(io::Error::other)?,
        )?;
        fs::rename(&temporary, &path)
    }

    pub fn remove(&self, uid: &str) -> io::Result<()> {
        match fs::remove_file(self.path(uid)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every record, and the files that are not records (said, then left alone).
    pub fn load(&self) -> io::Result<Loaded> {
        let mut pods = Vec::new();
        let mut unreadable = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<PodSpec>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(pod) => pods.push(pod),
                Err(e) => unreadable.push((path, e)),
            }
        }
        Ok(Loaded { pods, unreadable })
    }

    /// A uid is the file's name: only characters a Kubernetes uid has (and nothing that
    /// could leave the directory) are kept.
    fn path(&self, uid: &str) -> PathBuf {
        let name: String = uid
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{name}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_odd_uids_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        let pod = PodSpec {
            namespace: "shop".into(),
            name: "orders-0".into(),
            uid: "../../etc/passwd".into(),
            netns: "/var/run/netns/cni-1".into(),
            spiffe_id: None,
        };
        records.save(&pod).unwrap();
        fs::write(dir.path().join("junk.json"), "{").unwrap();
        let loaded = records.load().unwrap();
        assert_eq!(loaded.pods, vec![pod.clone()]);
        assert_eq!(loaded.unreadable.len(), 1);
        assert!(dir.path().join("______etc_passwd.json").exists());
        records.remove(&pod.uid).unwrap();
        records.remove(&pod.uid).unwrap();
        assert!(records.load().unwrap().pods.is_empty());
    }
}
