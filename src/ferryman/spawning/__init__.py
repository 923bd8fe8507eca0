"""Starting app processes: detection, the spawn journey, the handshake, the child's fds."""
