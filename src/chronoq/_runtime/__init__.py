"""Private runtime parts shared by the services: config, lifecycle, failpoints, logging."""
