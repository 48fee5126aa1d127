//! Kubernetes REST API machinery (work in progress on the kube-serve branch).
