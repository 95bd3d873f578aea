//! Real clients from Debian packages: skopeo, containerd (ctr), docker-registry, dockerd.
