//! What a container log says about its container, from its path and the runtime's files beside
//! it, never from an API server: the envelope's `path` (the source name the collector files
//! its lines under) and its `fields`.
//!
//! - Docker: `<directory>/<id>/<id>-json.log`, with `config.v2.json` beside it (`Name`,
//!   `Config.Image`): path `docker/<name>` (the name without its leading `/`), fields
//!   `container_name`, `container_id`, `image`.
//! - CRI: `<directory>/<namespace>_<pod>_<uid>/<container>/<restart>.log`: path
//!   `pods/<namespace>/<pod>/<container>/<restart>.log`, fields `k8s_namespace`, `k8s_pod`,
//!   `k8s_pod_uid`, `k8s_container`, `k8s_restart`.
//!
//! Both add `stream` per line. A path that does not have the runtime's shape (or a Docker
//! container without a readable `config.v2.json`) still gets a name: what the path gives.

use std::collections::BTreeMap;
use std::path::Path;

use logship_config::agent::Format;
use serde::Deserialize;

/// A container's source name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The envelope's `path`.
    pub source: String,
    /// The container's fields (the input's own come under them).
    pub fields: BTreeMap<String, String>,
    /// Why the runtime's metadata could not be read, if it could not (said once by the caller).
    pub problem: Option<String>,
}

/// The parts of Docker's `config.v2.json` we use.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<DockerContainerConfig>,
}

#[derive(Deserialize)]
struct DockerContainerConfig {
    #[serde(rename = "Image", default)]
    image: String,
}

/// The metadata of the container whose log is at `path` (the name it was found under, never a
/// rotated name).
pub fn of(format: Format, path: &Path) -> Meta {
    match format {
        Format::Docker => docker(path),
        Format::Cri => cri(path),
        Format::Lines => Meta {
            source: path.to_string_lossy().into_owned(),
            fields: BTreeMap::new(),
            problem: None,
        },
    }
}

fn docker(path: &Path) -> Meta {
    let dir = path.parent();
    let id = dir
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut fields = BTreeMap::from([("container_id".to_string(), id.clone())]);
    let config_path = dir.map(|d| d.join("config.v2.json"));
    let config = config_path.as_deref().map(|p| {
        std::fs::read(p)
            .map_err(|err| format!("cannot read {}: {err}", p.display()))
            .and_then(|bytes| {
                serde_json::from_slice::<DockerConfig>(&bytes)
                    .map_err(|err| format!("cannot parse {}: {err}", p.display()))
            })
    });
    let (name, problem) = match config {
        Some(Ok(config)) => {
            if let Some(image) = config.config.map(|c| c.image).filter(|i| !i.is_empty()) {
                fields.insert("image".into(), image);
            }
            let name = config.name.trim_start_matches('/').to_string();
            if name.is_empty() {
                (
                    id.clone(),
                    Some("config.v2.json names no container".to_string()),
                )
            } else {
                (name, None)
            }
        }
        Some(Err(problem)) => (id.clone(), Some(problem)),
        None => (id.clone(), Some("no container directory".to_string())),
    };
    fields.insert("container_name".into(), name.clone());
    Meta {
        source: format!("docker/{name}"),
        fields,
        problem,
    }
}

fn cri(path: &Path) -> Meta {
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let file = name(Some(path));
    let container_dir = path.parent();
    let container = name(container_dir);
    let pod_dir = name(container_dir.and_then(Path::parent));
    let restart = file.strip_suffix(".log").unwrap_or(&file).to_string();
    // Namespaces and pod names are DNS labels and subdomains, uids are UUIDs: none holds `_`.
    let mut parts = pod_dir.splitn(3, '_');
    let (namespace, pod, uid) = match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(pod), Some(uid)) if !ns.is_empty() && !pod.is_empty() => {
            (ns.to_string(), pod.to_string(), uid.to_string())
        }
        _ => {
            return Meta {
                source: format!("pods/{pod_dir}/{container}/{file}"),
                fields: BTreeMap::from([
                    ("k8s_container".to_string(), container),
                    ("k8s_restart".to_string(), restart),
                ]),
                problem: Some(format!(
                    "directory \"{pod_dir}\" is not <namespace>_<pod>_<uid>"
                )),
            };
        }
    };
    Meta {
        source: format!("pods/{namespace}/{pod}/{container}/{file}"),
        fields: BTreeMap::from([
            ("k8s_namespace".to_string(), namespace),
            ("k8s_pod".to_string(), pod),
            ("k8s_pod_uid".to_string(), uid),
            ("k8s_container".to_string(), container),
            ("k8s_restart".to_string(), restart),
        ]),
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_metadata_from_the_path_alone() {
        let meta = of(
            Format::Cri,
            Path::new("/var/log/pods/shop_web-7d9f_0b1c-22/nginx/3.log"),
        );
        assert_eq!(meta.source, "pods/shop/web-7d9f/nginx/3.log");
        assert_eq!(meta.fields["k8s_namespace"], "shop");
        assert_eq!(meta.fields["k8s_pod"], "web-7d9f");
        assert_eq!(meta.fields["k8s_pod_uid"], "0b1c-22");
        assert_eq!(meta.fields["k8s_container"], "nginx");
        assert_eq!(meta.fields["k8s_restart"], "3");
        assert!(meta.problem.is_none());
    }

    #[test]
    fn docker_metadata_from_config_v2_json() {
        let dir = tempfile::tempdir().unwrap();
        let id = "4f1c0ffee";
        let container = dir.path().join(id);
        std::fs::create_dir(&container).unwrap();
        let log = container.join(format!("{id}-json.log"));
        let missing = of(Format::Docker, &log);
        assert_eq!(missing.source, format!("docker/{id}"));
        assert!(missing.problem.is_some());
        std::fs::write(
            container.join("config.v2.json"),
            br#"{"ID":"4f1c0ffee","Name":"/web","Config":{"Image":"busybox:1"},"State":{}}"#,
        )
        .unwrap();
        let meta = of(Format::Docker, &log);
        assert_eq!(meta.source, "docker/web");
        assert_eq!(meta.fields["container_name"], "web");
        assert_eq!(meta.fields["container_id"], id);
        assert_eq!(meta.fields["image"], "busybox:1");
        assert!(meta.problem.is_none());
    }
}
