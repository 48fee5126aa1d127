//! Configuration for cloudcore and edgecore (work in progress on the config branch).
