"""What several tests share: image generators, certificates, stand-ins (a Hub, an app server) and helper processes."""
