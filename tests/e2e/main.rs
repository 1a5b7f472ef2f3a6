//! End-to-end: real `keelson server` processes driven by the real etcdctl
//! and the etcd-client crate; the Kubernetes API driven by kubectl and the
//! kube crate.

mod client;
mod corruption;
mod durability;
mod etcdctl;
mod ha;
mod kube;
