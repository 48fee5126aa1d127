//! The new edgecore out of an image already in containerd (`--image REPO`, tag = `--toVersion`):
//! pulled through CRI if the runtime lacks it (as upstream's `image_runtime.go`), exported with
//! `ctr --address SOCK --namespace k8s.io images export FILE REF` (argv), and read with
//! [`super::oci`], which writes nothing but the one binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubeedge_apis::operations::task::{check_upgrade_image, check_version};

use super::{Error, Node, oci, service};

/// upstream's `--image` default.
pub const DEFAULT_IMAGE: &str = "kubeedge/installation-package";
/// How long `ctr images export` may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// `image:version` as the runtime names it: Docker's normalisation (`docker.io/`, and
/// `library/` for a one-part name) unless the first part is a registry host.
pub fn reference(image: &str, version: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_host = image.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    match (has_host, image.contains('/')) {
        (true, _) => format!("{image}:{version}"),
        (false, true) => format!("docker.io/{image}:{version}"),
        (false, false) => format!("docker.io/library/{image}:{version}"),
    }
}

/// Puts `/usr/local/bin/edgecore` of `image:version` at `{work}/edgecore`; returns that path.
pub fn fetch(node: &Node, image: &str, version: &str, work: &Path) -> Result<PathBuf, Error> {
    check_upgrade_image(image).map_err(|e| Error::Usage(format!("--image: {e}")))?;
    check_version(version).map_err(|e| Error::Usage(format!("--toVersion: {e}")))?;
    let edge = node.edge()?;
    let socket = edge.runtime_socket().map_err(|e| Error::Failed(crate::ctl::chain(&e)))?;
    let reference = reference(image, version);
    ensure_pulled(&socket, &reference)?;
    let archive = work.join("image.tar");
    println!("[upgrade] Exporting {reference} from containerd at {}.", socket.display());
    let mut ctr = Command::new("ctr");
    ctr.arg("--address").arg(&socket).args(["--namespace", "k8s.io", "images", "export"]).arg(&archive).arg(&reference);
    let what = format!(
        "ctr --address {} --namespace k8s.io images export {} {reference}",
        socket.display(),
        archive.display()
    );
    let out = service::output(&mut ctr, &what, EXPORT_TIMEOUT)?;
    if !out.status.success() {
        return Err(Error::Failed(format!("{what} failed ({}): {}", out.status, out.stderr.trim())));
    }
    let binary = work.join("edgecore");
    let extracted =
        oci::extract_edgecore(&archive, &binary).map_err(|e| Error::Failed(format!("image {reference}: {e}")));
    let _ = std::fs::remove_file(&archive);
    let size = extracted?;
    println!("[upgrade] Extracted /{} ({size} bytes) from {reference}.", oci::TARGET);
    Ok(binary)
}

/// Pulls `reference` through CRI unless the runtime has it.
fn ensure_pulled(socket: &Path, reference: &str) -> Result<(), Error> {
    let fail = |e: kubeedge_cri::Error| {
        Error::Failed(format!(
            "image {reference} in the container runtime at {} (modules.edged.tailoredKubeletConfig.containerRuntimeEndpoint): {}",
            socket.display(),
            crate::ctl::chain(&e)
        ))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("starting the runtime: {e}")))?;
    rt.block_on(async {
        let opts = kubeedge_cri::Options {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let cri = kubeedge_cri::Cri::connect_with(socket, opts).await.map_err(fail)?;
        if cri.image_status(reference).await.map_err(fail)?.is_none() {
            println!("[upgrade] Pulling {reference}.");
            cri.pull_image(reference, None, None).await.map_err(fail)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_as_the_runtime_names_them() {
        assert_eq!(reference("localhost/kubeedge/edgecore", "v1.98.0"), "localhost/kubeedge/edgecore:v1.98.0");
        assert_eq!(
            reference("kubeedge/installation-package", "v1.23.0"),
            "docker.io/kubeedge/installation-package:v1.23.0"
        );
        assert_eq!(reference("edgecore", "v1.0.0"), "docker.io/library/edgecore:v1.0.0");
        assert_eq!(reference("reg.io:5000/a/b", "v1.0.0"), "reg.io:5000/a/b:v1.0.0");
    }
}
