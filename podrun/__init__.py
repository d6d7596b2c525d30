"""podrun: a daemonless pod runner for Linux (OCI images, namespaces, cgroups, systemd)."""

__version__ = "0.1.0"
