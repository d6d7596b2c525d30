"""podrun's benchmarks against its peers (podman, skopeo + umoci); see bench/README.md."""
