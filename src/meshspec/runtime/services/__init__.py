"""The project's own workloads: servers run as `meshspec serve <name>`."""
