//! Where KubeEdge lives on a host (upstream's paths), relative to a root directory: `/` on a
//! real host, another directory with `--root` (tests, image builders), where every path below
//! is taken inside that directory the way `systemctl --root` and `rpm --root` do. Files written
//! there name the paths as seen from inside the root (the unit says `/usr/local/bin/edgecore`),
//! so the tree can be copied onto a host or into an image as it is.

use std::path::{Path, PathBuf};

/// KubeEdge's configuration and credentials.
pub const KUBEEDGE_DIR: &str = "/etc/kubeedge";
/// edgecore's config file.
pub const EDGECORE_YAML: &str = "/etc/kubeedge/config/edgecore.yaml";
/// cloudcore's config file.
pub const CLOUDCORE_YAML: &str = "/etc/kubeedge/config/cloudcore.yaml";
/// The CA an edge trusts (edgeHub `tlsCaFile`).
pub const EDGE_CA: &str = "/etc/kubeedge/ca/rootCA.crt";
/// The default `--certPath`: the node certificate and key.
pub const CERT_DIR: &str = "/etc/kubeedge/certs";
/// edgecore's state: the database, DMI sockets.
pub const STATE_DIR: &str = "/var/lib/kubeedge";
/// Where the daemons' binaries are installed.
pub const BIN_DIR: &str = "/usr/local/bin";
/// Where units are installed.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The root every path is taken in.
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    /// `--root DIR`, or `/`.
    pub fn new(dir: Option<&Path>) -> Self {
        Self(dir.map_or_else(|| PathBuf::from("/"), Path::to_owned))
    }

    /// Whether this is the running host's own root: only then are services started and
    /// processes looked at.
    pub fn is_host(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// The directory given with `--root`.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `abs` (an absolute path as seen inside the root) on this machine. `..` is resolved
    /// lexically and never climbs above the root (`/../../etc/x` is the root's `/etc/x`, as
    /// inside a chroot), so a path from a config file cannot name a file outside `--root`.
    pub fn at(&self, abs: impl AsRef<Path>) -> PathBuf {
        use std::path::Component;
        let mut inside = PathBuf::new();
        for c in abs.as_ref().components() {
            match c {
                Component::Normal(part) => inside.push(part),
                Component::ParentDir => {
                    inside.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        self.0.join(inside)
    }

    /// The binary `name` in [`BIN_DIR`].
    pub fn bin(&self, name: &str) -> PathBuf {
        self.at(BIN_DIR).join(name)
    }

    /// The unit file `name` in [`UNIT_DIR`].
    pub fn unit(&self, name: &str) -> PathBuf {
        self.at(UNIT_DIR).join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let r = Root::new(Some(Path::new("/srv/root")));
        assert_eq!(r.at("/etc/kubeedge"), Path::new("/srv/root/etc/kubeedge"));
        assert_eq!(r.at("/../../etc/passwd"), Path::new("/srv/root/etc/passwd"));
        assert_eq!(r.at("/var/lib/../../../x/./y"), Path::new("/srv/root/x/y"));
        assert_eq!(r.at("relative/p"), Path::new("/srv/root/relative/p"));
        assert_eq!(Root::new(None).at("/a/../b"), Path::new("/b"));
    }
}
